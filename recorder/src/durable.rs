//! File operations the spool and the outbox share to keep what they acknowledged across a crash.

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// Syncs a directory, so that a rename, a new or a removed file in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

/// Removes a file; one that is gone already (a retry after a crash) is fine.
pub(crate) fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
