//! Naming epochs ([`EpochSelector`]) and reading their manifests.

use std::fmt;
use std::str::FromStr;

use super::{InspectError, Target};
use crate::checkpoint::{EpochEntry, Manifest};

/// An epoch as a user names it: a number, or `latest` (the newest committed
/// epoch, the one a run would resume from if it verifies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochSelector {
    /// This epoch.
    Number(u64),
    /// The newest committed epoch.
    Latest,
}

impl FromStr for EpochSelector {
    type Err = String;

    fn from_str(s: &str) -> Result<EpochSelector, String> {
        if s == "latest" {
            return Ok(EpochSelector::Latest);
        }
        s.parse()
            .map(EpochSelector::Number)
            .map_err(|_| format!("`{s}` is not an epoch: write a number or `latest`"))
    }
}

impl fmt::Display for EpochSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EpochSelector::Number(n) => write!(f, "{n}"),
            EpochSelector::Latest => f.write_str("latest"),
        }
    }
}

/// A manifest with whether its epoch is committed. A committed epoch's
/// manifest was checked against its commit marker; an uncommitted one's
/// was only decoded.
#[derive(Debug, Clone)]
pub struct EpochManifest {
    /// The manifest.
    pub manifest: Manifest,
    /// Whether the epoch has a commit marker (so the manifest was verified
    /// against it).
    pub committed: bool,
}

impl Target {
    /// The task's epochs, oldest first.
    pub async fn epochs(&self) -> Result<Vec<EpochEntry>, InspectError> {
        Ok(self.store().epochs(self.task()).await?)
    }

    /// The epoch `selector` names among `epochs`.
    pub fn select(
        &self,
        epochs: &[EpochEntry],
        selector: EpochSelector,
    ) -> Result<EpochEntry, InspectError> {
        let found = match selector {
            EpochSelector::Latest => epochs.iter().rev().find(|e| e.committed),
            EpochSelector::Number(n) => epochs.iter().find(|e| e.epoch == n),
        };
        found.copied().ok_or_else(|| match selector {
            EpochSelector::Latest => InspectError::NoCommittedEpoch {
                pipeline: self.pipeline().to_owned(),
                task: self.task().to_owned(),
            },
            EpochSelector::Number(epoch) => InspectError::NoSuchEpoch {
                pipeline: self.pipeline().to_owned(),
                task: self.task().to_owned(),
                epoch,
                available: summarize(epochs),
            },
        })
    }

    /// Lists the epochs and finds the one `selector` names.
    pub async fn resolve(&self, selector: EpochSelector) -> Result<EpochEntry, InspectError> {
        let epochs = self.epochs().await?;
        self.select(&epochs, selector)
    }

    /// Reads an epoch's manifest: verified against the commit marker if the
    /// epoch is committed, only decoded if not.
    pub async fn manifest(&self, entry: EpochEntry) -> Result<EpochManifest, InspectError> {
        let manifest = if entry.committed {
            self.store()
                .read_committed(self.task(), entry.epoch)
                .await?
        } else {
            self.store()
                .read_manifest(self.task(), entry.epoch)
                .await?
                .ok_or_else(|| InspectError::NoManifest {
                    task: self.task().to_owned(),
                    epoch: entry.epoch,
                })?
        };
        Ok(EpochManifest {
            manifest,
            committed: entry.committed,
        })
    }

    /// Resolves `selector` and reads that epoch's manifest.
    pub async fn load(&self, selector: EpochSelector) -> Result<EpochManifest, InspectError> {
        let entry = self.resolve(selector).await?;
        self.manifest(entry).await
    }
}

/// `2, 3, 4`, or `2, 3, ..., 40 (39 epochs)` when there are many; `none`.
fn summarize(epochs: &[EpochEntry]) -> String {
    const SHOWN: usize = 8;
    let numbers: Vec<String> = epochs.iter().map(|e| e.epoch.to_string()).collect();
    match numbers.as_slice() {
        [] => "none".to_owned(),
        [.., last] if numbers.len() > SHOWN => format!(
            "{}, ..., {last} ({} epochs)",
            numbers[..SHOWN - 1].join(", "),
            numbers.len()
        ),
        _ => numbers.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_numbers_and_latest_and_say_what_is_wrong() {
        assert_eq!("7".parse(), Ok(EpochSelector::Number(7)));
        assert_eq!("latest".parse(), Ok(EpochSelector::Latest));
        assert_eq!(
            "newest".parse::<EpochSelector>(),
            Err("`newest` is not an epoch: write a number or `latest`".to_owned())
        );
    }

    #[test]
    fn many_epochs_are_summarized() {
        let entries = |n: u64| -> Vec<EpochEntry> {
            (1..=n)
                .map(|epoch| EpochEntry {
                    epoch,
                    committed: true,
                })
                .collect()
        };
        assert_eq!(summarize(&entries(0)), "none");
        assert_eq!(summarize(&entries(3)), "1, 2, 3");
        assert_eq!(
            summarize(&entries(20)),
            "1, 2, 3, 4, 5, 6, 7, ..., 20 (20 epochs)"
        );
    }
}
