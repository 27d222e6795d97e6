//! [`Progress`]: progress bars for long downloads, on a terminal only.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress is shown: on stderr when it is a terminal, nowhere
/// otherwise (scripts, tests, pipes see no bars).
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    visible: bool,
}

impl Progress {
    /// Bars on stderr if stderr is a terminal.
    pub fn on_terminal() -> Progress {
        Progress {
            visible: std::io::stderr().is_terminal(),
        }
    }

    /// No bars (for library callers and tests).
    pub fn hidden() -> Progress {
        Progress { visible: false }
    }

    /// A bar for `len` steps of `what` (e.g. `pages`); it clears itself
    /// when dropped after [`ProgressBar::finish_and_clear`], or stays
    /// hidden.
    pub fn bar(&self, len: u64, what: &'static str) -> ProgressBar {
        if !self.visible {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what);
        bar
    }
}
