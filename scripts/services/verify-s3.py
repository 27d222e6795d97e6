#!/usr/bin/env python3
"""Check a running S3 server with an independent client (boto3 from PyPI): bucket
create, put/get/list/delete, conditional writes (If-None-Match: * and If-Match),
through boto3 and as raw signed HTTP. Reads the env printed by `s3 start`
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...). Exits non-zero on any failed check."""
import os, sys, time, uuid
import boto3, botocore
from botocore.config import Config
ep = os.environ["AWS_ENDPOINT_URL"]
s3 = boto3.client("s3", endpoint_url=ep, region_name=os.environ["AWS_REGION"],
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
b = "weir-verify-" + uuid.uuid4().hex[:8]
s3.create_bucket(Bucket=b); print("create_bucket", b, "ok")
s3.put_object(Bucket=b, Key="a/one", Body=b"hello"); print("put ok")
g = s3.get_object(Bucket=b, Key="a/one"); body = g["Body"].read(); print("get", body, g["ETag"]); assert body == b"hello"
s3.put_object(Bucket=b, Key="a/two", Body=b"x" * 6_000_000)
print("list", [(o["Key"], o["Size"]) for o in s3.list_objects_v2(Bucket=b, Prefix="a/")["Contents"]])
s3.delete_object(Bucket=b, Key="a/two")
print("after delete", [o["Key"] for o in s3.list_objects_v2(Bucket=b).get("Contents", [])])
try:
    s3.get_object(Bucket=b, Key="a/two"); print("FAIL deleted object still readable")
except botocore.exceptions.ClientError as e:
    print("get deleted ->", e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"])

def cond(desc, **kw):
    try:
        r = s3.put_object(Bucket=b, **kw)
        print(f"{desc}: OK {r['ResponseMetadata']['HTTPStatusCode']} etag={r['ETag']}")
        return r["ResponseMetadata"]["HTTPStatusCode"], r
    except botocore.exceptions.ClientError as e:
        print(f"{desc}: ERROR {e.response['ResponseMetadata']['HTTPStatusCode']} {e.response['Error'].get('Code')} {e.response['Error'].get('Message')}")
        return e.response["ResponseMetadata"]["HTTPStatusCode"], None
c1, r1 = cond("If-None-Match:* first (new key)", Key="ckpt/1", Body=b"v1", IfNoneMatch="*")
c2, _ = cond("If-None-Match:* second (existing key)", Key="ckpt/1", Body=b"v2", IfNoneMatch="*")
v = s3.get_object(Bucket=b, Key="ckpt/1")["Body"].read(); print("content now:", v)
assert (c1, c2, v) == (200, 412, b"v1"), (c1, c2, v)
c3, _ = cond("If-Match correct etag", Key="ckpt/1", Body=b"v3", IfMatch=r1["ETag"])
c4, _ = cond("If-Match stale etag", Key="ckpt/1", Body=b"v4", IfMatch=r1["ETag"])
v = s3.get_object(Bucket=b, Key="ckpt/1")["Body"].read(); print("content now:", v)
assert (c3, c4, v) == (200, 412, b"v3"), (c3, c4, v)
# raw HTTP check, independent of boto's parameter handling
import urllib.request
import hashlib
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
sess = boto3.Session()
def raw_put(key, hdrs):
    url = f"{ep}/{b}/{key}"
    hdrs = dict(hdrs, **{"x-amz-content-sha256": hashlib.sha256(b"raw").hexdigest()})
    req = AWSRequest(method="PUT", url=url, data=b"raw", headers=hdrs)
    S3SigV4Auth(sess.get_credentials(), "s3", os.environ["AWS_REGION"]).add_auth(req)
    r = urllib.request.Request(url, data=b"raw", method="PUT", headers=dict(req.headers))
    try:
        with urllib.request.urlopen(r) as resp: return resp.status
    except urllib.error.HTTPError as e:
        if e.code != 412: print("raw PUT", e.code, e.read()[:300])
        return e.code
r = (raw_put("raw/1", {"If-None-Match": "*"}), raw_put("raw/1", {"If-None-Match": "*"}))
print("raw PUT If-None-Match:* new, again:", r)
assert r == (200, 412), r
# race: 8 clients create the same key with If-None-Match:* at once; exactly one may win
import concurrent.futures
def race(i):
    c = boto3.client("s3", endpoint_url=ep, region_name=os.environ["AWS_REGION"],
                     config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    try:
        c.put_object(Bucket=b, Key="race/1", Body=f"w{i}".encode(), IfNoneMatch="*"); return (200, i)
    except botocore.exceptions.ClientError as e:
        return (e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"].get("Code"))
for rnd in range(5):
    s3.delete_object(Bucket=b, Key="race/1")
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        res = list(ex.map(race, range(8)))
    wins = [r for r in res if r[0] == 200]
    body = s3.get_object(Bucket=b, Key="race/1")["Body"].read().decode()
    print("race round", rnd, "results:", sorted(set(r[0] for r in res)), [r[1] for r in res if r[0] != 200][:2], "winners:", len(wins), "stored:", body)
    assert len(wins) == 1 and body == f"w{wins[0][1]}", (res, body)
for o in s3.list_objects_v2(Bucket=b).get("Contents", []): s3.delete_object(Bucket=b, Key=o["Key"])
s3.delete_bucket(Bucket=b); print("bucket deleted")
print("s3: all checks passed")
