#!/usr/bin/env python3
"""Check a running broker with an independent client (confluent-kafka from PyPI):
4-partition topic, a committed and an aborted transaction, read_committed vs
read_uncommitted, and fencing of a producer by a second one with the same
transactional.id. Usage: verify-kafka.py [BOOTSTRAP] (default 127.0.0.1:19092).
Exits non-zero on any failed check."""
import sys, time, uuid
from confluent_kafka import Producer, Consumer, KafkaException, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
bs = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:19092"
topic = "weir-verify-" + uuid.uuid4().hex[:8]
t0 = time.time()
a = AdminClient({"bootstrap.servers": bs})
for t, f in a.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)]).items():
    f.result()
md = a.list_topics(topic, timeout=10)
print("topic", topic, "partitions", len(md.topics[topic].partitions))
tid = "weir-tx-" + uuid.uuid4().hex[:6]
p = Producer({"bootstrap.servers": bs, "transactional.id": tid})
p.init_transactions(30)
print("init_transactions ok %.2fs" % (time.time() - t0))
p.begin_transaction()
for i in range(8):
    p.produce(topic, key=str(i), value=f"committed-{i}", partition=i % 4)
p.commit_transaction(30)
print("commit ok")
p.begin_transaction()
for i in range(8):
    p.produce(topic, key=str(i), value=f"aborted-{i}", partition=i % 4)
p.flush(10)
p.abort_transaction(30)
print("abort ok")
p.begin_transaction()
for i in range(4):
    p.produce(topic, key=str(i), value=f"committed2-{i}", partition=i % 4)
p.commit_transaction(30)
print("second commit ok")

def read(iso):
    c = Consumer({"bootstrap.servers": bs, "group.id": "g-" + uuid.uuid4().hex[:6],
                  "auto.offset.reset": "earliest", "isolation.level": iso, "enable.auto.commit": False})
    c.assign([TopicPartition(topic, i, 0) for i in range(4)])
    got = []; deadline = time.time() + 15; eofs = set()
    c2 = c
    while time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            if len(got) >= 12 and iso == "read_committed": break
            if len(got) >= 20: break
            continue
        if m.error(): continue
        got.append(m.value().decode())
    c.close()
    return got
rc = read("read_committed")
ru = read("read_uncommitted")
print("read_committed:", len(rc), sorted(rc))
print("read_uncommitted:", len(ru), "aborted visible:", sum(v.startswith("aborted") for v in ru))
assert len(rc) == 12 and not any(v.startswith("aborted") for v in rc), rc
assert sum(v.startswith("aborted") for v in ru) == 8

# fencing
p1 = Producer({"bootstrap.servers": bs, "transactional.id": tid + "-f"})
p1.init_transactions(30)
p1.begin_transaction()
p1.produce(topic, value="p1-before-fence", partition=0)
p1.flush(10)
p2 = Producer({"bootstrap.servers": bs, "transactional.id": tid + "-f"})
p2.init_transactions(30)
print("p2 init_transactions ok (same transactional.id)")
try:
    p1.produce(topic, value="p1-after-fence", partition=0)
    p1.commit_transaction(30)
    print("FAIL: p1 commit succeeded after fence")
    sys.exit(1)
except KafkaException as e:
    err = e.args[0]
    print("p1 error:", err.name(), err.code(), "fatal=", err.fatal(), "txn_requires_abort=", err.txn_requires_abort(), "|", err.str())
    assert err.code() == KafkaError._FENCED or err.fatal(), err
p2.begin_transaction(); p2.produce(topic, value="p2", partition=0); p2.commit_transaction(30)
rc = read("read_committed")
print("after fencing read_committed:", len(rc), "p1 records visible:", [v for v in rc if v.startswith("p1")], "p2 visible:", "p2" in rc)
assert not any(v.startswith("p1") for v in rc) and "p2" in rc, rc
print("kafka: all checks passed")
print("total %.2fs" % (time.time() - t0))
