//! The file mailer's outbox as the tests and the benchmark read it.

use std::path::{Path, PathBuf};

/// The mails in `dir`, oldest first: `.eml` files only, never the hidden file a mail is written
/// under before it is renamed.
pub fn mails(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}
