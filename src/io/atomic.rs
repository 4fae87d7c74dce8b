//! Crash-safe file replacement: write a temporary file in the same folder, sync it, rename it
//! over the target, sync the folder.
//!
//! A rename within one folder is atomic on POSIX file systems (and `MoveFileEx` with
//! replace on Windows, which `std::fs::rename` uses): a reader, or the next process after a
//! crash, sees either the old file or the new one, never a mix. Syncing the temporary file
//! before the rename makes sure the new name never points at data still in the page cache
//! only; syncing the folder afterwards makes the rename itself durable.
//!
//! If writing fails (disk full, an I/O error), the temporary file is removed and the old
//! file is untouched. If the process is killed while writing, the old file is untouched and
//! a temporary file `.{name}.tmp.{pid}.{random}` may remain in the folder; it is never read,
//! never reused (each save draws a fresh random 64-bit suffix and creates the file with
//! `O_EXCL`, drawing again if the name exists: a restarted process with the same id, such as
//! PID 1 in a container, cannot collide with its predecessor's leftovers), and deleting it is
//! always safe.
//!
//! A path that is a symbolic link is resolved first: the file the link points to is
//! replaced (its folder holds the temporary file) and the link stays a link.

use std::collections::hash_map::RandomState;
use std::fs::{self, File, OpenOptions};
use std::hash::BuildHasher;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{PhmError, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// How many fresh names a save tries before it gives up.
const NAME_TRIES: usize = 16;

/// A random 64-bit number: std's `RandomState` is keyed from the operating system's random
/// source, so two processes (or two runs with the same process id) draw different numbers.
fn random_suffix() -> u64 {
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Follows `path` through symbolic links (at most 40, as POSIX systems do) to the file a
/// save must replace.
fn resolve_links(path: &Path) -> io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&p)?;
                p = match p.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(io::Error::other("too many levels of symbolic links"))
}

/// A destination for the bytes of a file that can be flushed to the disk.
pub(crate) trait SyncWrite: Write {
    /// Flushes the written bytes to the storage device (`fsync`).
    fn sync(&mut self) -> io::Result<()>;
}

impl SyncWrite for File {
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }
}

/// Replaces the file at `path` by `bytes`, crash-safely (see the [module docs](self)).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, bytes, |file| file)
}

/// [`write_atomic`] through a writer made from the temporary file by `wrap` (tests inject
/// failures this way).
pub(crate) fn write_atomic_with<W: SyncWrite>(
    path: &Path,
    bytes: &[u8],
    wrap: impl FnOnce(File) -> W,
) -> Result<()> {
    let write_err = |e: io::Error| PhmError::Write {
        path: path.display().to_string(),
        kind: e.kind(),
        reason: e.to_string(),
    };
    let target = resolve_links(path).map_err(write_err)?;
    let name = target.file_name().ok_or_else(|| PhmError::Write {
        path: path.display().to_string(),
        kind: io::ErrorKind::InvalidInput,
        reason: "the path does not name a file".to_string(),
    })?;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut opened = None;
    for _ in 0..NAME_TRIES {
        let tmp = dir.join(format!(
            ".{}.tmp.{}.{:016x}",
            name.to_string_lossy(),
            std::process::id(),
            random_suffix()
        ));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => {
                opened = Some((tmp, file));
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(write_err(e)),
        }
    }
    let (tmp, file) = opened.ok_or_else(|| {
        write_err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{NAME_TRIES} fresh temporary names all exist"),
        ))
    })?;
    let mut writer = wrap(file);
    let written = writer
        .write_all(bytes)
        .and_then(|()| writer.flush())
        .and_then(|()| writer.sync());
    drop(writer);
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, &target)) {
        // Best effort: the temporary file is ours and holds nothing of value.
        let _ = fs::remove_file(&tmp);
        return Err(write_err(e));
    }
    sync_dir(&dir);
    Ok(())
}

/// Makes a rename in `dir` durable (unix). Best effort: some file systems refuse to sync a
/// folder, and the rename has already happened, so a failure here is not reported.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts `left` bytes, then fails every write.
    struct FailAfter {
        file: File,
        left: usize,
    }

    impl Write for FailAfter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::other("injected failure"));
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            self.file.write(&buf[..n])
        }
        fn flush(&mut self) -> io::Result<()> {
            self.file.flush()
        }
    }

    impl SyncWrite for FailAfter {
        fn sync(&mut self) -> io::Result<()> {
            self.file.sync_all()
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("phm-nn-atomic-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file() {
        let dir = scratch("fail");
        let path = dir.join("model.safetensors");
        write_atomic(&path, b"old contents").unwrap();
        let new = vec![7u8; 10_000];
        for fail_at in [0, 1, 4_999, 9_999] {
            let err = write_atomic_with(&path, &new, |file| FailAfter {
                file,
                left: fail_at,
            })
            .unwrap_err();
            assert!(matches!(err, PhmError::Write { .. }), "{err}");
            assert!(err.to_string().contains("injected failure"), "{err}");
            assert_eq!(fs::read(&path).unwrap(), b"old contents");
            assert_eq!(entries(&dir), ["model.safetensors"]);
        }
        // Enough room: the file is replaced.
        write_atomic_with(&path, &new, |file| FailAfter { file, left: 10_000 }).unwrap();
        assert_eq!(fs::read(&path).unwrap(), new);
        assert_eq!(entries(&dir), ["model.safetensors"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_folder_is_a_write_error_naming_the_path() {
        let dir = scratch("missing");
        let path = dir.join("no/such/folder/model.safetensors");
        let err = write_atomic(&path, b"x").unwrap_err();
        assert!(
            matches!(
                err,
                PhmError::Write {
                    kind: io::ErrorKind::NotFound,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("no/such/folder/model.safetensors"),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
