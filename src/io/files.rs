//! File access with the guarantees of the [module docs](super#files-what-is-refused-and-what-is-never-modified):
//! bounded reads of regular files only, and atomic writes of one or several outputs.

use std::collections::hash_map::DefaultHasher;
use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::io_error;
use crate::error::{Error, Result};

/// Read a whole file, refusing anything that is not a regular file once symbolic links are
/// resolved (a directory, a FIFO, `/dev/zero`, a socket), and never reading more than the
/// size the file had when it was opened.
///
/// This is what every reader of [`llfc::io`](super) uses; it is public so that tools reading
/// their own small files (a JSON spec, say) get the same guarantees.
///
/// # Errors
/// [`Error::Io`] naming the path if it cannot be opened or read, is not a regular file, or
/// grows while it is read.
///
/// # Examples
/// ```
/// assert!(llfc::io::read_regular_file("/").is_err()); // a directory
/// ```
pub fn read_regular_file(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    let (file, size) = open_regular_file(path)?;
    let capacity = usize::try_from(size).map_err(|_| {
        io_error(
            path,
            std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("{size} bytes do not fit in memory"),
            ),
        )
    })?;
    let mut data = Vec::new();
    data.try_reserve_exact(capacity).map_err(|_| {
        io_error(
            path,
            std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("cannot allocate {size} bytes to read the file"),
            ),
        )
    })?;
    file.take(size.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| io_error(path, e))?;
    if data.len() as u64 > size {
        return Err(io_error(
            path,
            std::io::Error::other(format!(
                "the file grew while it was read (it had {size} bytes when opened)"
            )),
        ));
    }
    Ok(data)
}

/// Open a regular file for reading, with its size when opened: what [`read_regular_file`] and
/// the streaming readers use (they never read past that size).
///
/// # Errors
/// As [`read_regular_file`].
pub(super) fn open_regular_file(path: &Path) -> Result<(File, u64)> {
    let not_regular = |kind: &str| {
        io_error(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("not a regular file ({kind})"),
            ),
        )
    };
    // Checked before opening: opening a FIFO would block until a writer comes.
    let meta = fs::metadata(path).map_err(|e| io_error(path, e))?;
    if !meta.is_file() {
        return Err(not_regular(file_kind(&meta)));
    }
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    // The file opened may not be the one examined (a rename in between): check it again.
    let meta = file.metadata().map_err(|e| io_error(path, e))?;
    if !meta.is_file() {
        return Err(not_regular(file_kind(&meta)));
    }
    Ok((file, meta.len()))
}

/// A regular file opened for streaming reads, bounded to the size it had when opened (see
/// [`Bounded`]), with that size.
///
/// # Errors
/// As [`read_regular_file`].
pub(super) fn open_bounded(path: &Path) -> Result<(Bounded<BufReader<File>>, u64)> {
    let (file, len) = open_regular_file(path)?;
    Ok((
        Bounded {
            inner: BufReader::new(file),
            len,
            pos: 0,
        },
        len,
    ))
}

/// A reader that sees only the first `len` bytes of `inner`: reads stop there and
/// `SeekFrom::End` counts from there, so a file that grows while it is read is read as it was
/// when opened.
pub(super) struct Bounded<R> {
    inner: R,
    len: u64,
    pos: u64,
}

impl<R: Read + Seek> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = usize::try_from(self.len.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        let take = buf.len().min(left);
        let n = self.inner.read(&mut buf[..take])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for Bounded<R> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        }
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )
        })?;
        self.pos = self.inner.seek(SeekFrom::Start(target))?;
        Ok(self.pos)
    }
}

/// A short description of a file type that is not a regular file.
fn file_kind(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a plain file"
}

/// Distinguishes the temporary files of concurrent writes within one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary sibling of `path`: `.llfc-<16 hex digits>.tmp` in the same directory,
/// a hash of the file name, the process id and a counter. Short, whatever the length of the
/// target's name, so that every name the file system accepts can be written.
fn temp_sibling(path: &Path) -> Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| Error::InvalidArgument {
        name: "path",
        reason: format!("`{}` does not name a file", path.display()),
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut h = DefaultHasher::new();
    name.hash(&mut h);
    std::process::id().hash(&mut h);
    TEMP_COUNTER.fetch_add(1, Ordering::Relaxed).hash(&mut h);
    Ok(dir.join(format!(".llfc-{:016x}.tmp", h.finish())))
}

/// Create a new temporary sibling of `path` (never an existing file), with its path.
fn create_temp(path: &Path) -> Result<(File, PathBuf)> {
    loop {
        let temp = temp_sibling(path)?;
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => return Ok((file, temp)),
            // A leftover of another process with the same hash: draw the next one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error(path, e)),
        }
    }
}

/// Removes the temporary file on drop unless it has been renamed into place.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // Best effort: the original error is the one worth reporting.
            let _ = fs::remove_file(path);
        }
    }
}

/// Fill `file` with `write`, then flush and sync it.
fn fill(
    path: &Path,
    file: File,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<()>,
) -> Result<()> {
    let mut writer = BufWriter::new(file);
    write(&mut writer)?;
    writer.flush().map_err(|e| io_error(path, e))?;
    let file = writer
        .into_inner()
        .map_err(|e| io_error(path, e.into_error()))?;
    file.sync_all().map_err(|e| io_error(path, e))
}

/// Write `path` atomically: `write` fills a new temporary file in the same directory, which is
/// flushed, synced and renamed over `path`. On any error (or panic) the temporary file is
/// removed and `path` is left as it was.
pub(super) fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<()>,
) -> Result<()> {
    let (file, temp_path) = create_temp(path)?;
    let mut guard = TempFile(Some(temp_path.clone()));
    fill(path, file, write)?;
    fs::rename(&temp_path, path).map_err(|e| io_error(path, e))?;
    guard.0 = None;
    Ok(())
}

/// One staged output of an [`OutputSet`].
#[derive(Debug)]
struct Staged {
    target: PathBuf,
    temp: PathBuf,
}

/// Several output files committed together: each is written in full to a temporary sibling
/// first ([`stage`](Self::stage), [`stage_bytes`](Self::stage_bytes)); [`commit`](Self::commit)
/// then renames them all into place. Until the commit no existing file is touched, and if
/// anything fails (or the set is dropped uncommitted) every temporary file is removed.
///
/// If a rename fails after others succeeded (a rare event: the temporaries sit in the targets'
/// directories), the files already replaced are restored from hard links taken before the
/// first rename, and outputs that did not exist are removed again; only where the file system
/// has no hard links can such a late failure leave some outputs committed.
///
/// # Examples
/// ```
/// use llfc::io::OutputSet;
/// let dir = std::env::temp_dir().join(format!("llfc-outputs-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let mut outputs = OutputSet::new();
/// outputs.stage_bytes(dir.join("a.txt"), b"first")?;
/// outputs.stage(dir.join("b.npy"), |tmp| llfc::io::write_npy(tmp, &ndarray::arr1(&[1.0f32])))?;
/// // Nothing exists yet under the final names.
/// assert!(!dir.join("a.txt").exists());
/// outputs.commit()?;
/// assert_eq!(std::fs::read(dir.join("a.txt")).unwrap(), b"first");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), llfc::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct OutputSet {
    staged: Vec<Staged>,
}

impl OutputSet {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Stage `target`: `write` is called with the path of a fresh temporary sibling of
    /// `target` (an empty file) and must write the whole output there (e.g. with
    /// [`write_checkpoint`](super::write_checkpoint)).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `target` names no file or is staged already; what `write`
    /// returns; [`Error::Io`] if the temporary file cannot be created. On error the set is
    /// unchanged (the temporary file of this call is removed).
    pub fn stage(
        &mut self,
        target: impl AsRef<Path>,
        write: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let target = target.as_ref();
        if self.staged.iter().any(|s| s.target == target) {
            return Err(Error::InvalidArgument {
                name: "target",
                reason: format!("`{}` is staged twice", target.display()),
            });
        }
        let (file, temp) = create_temp(target)?;
        drop(file);
        let mut guard = TempFile(Some(temp.clone()));
        write(&temp)?;
        guard.0 = None;
        self.staged.push(Staged {
            target: target.to_path_buf(),
            temp,
        });
        Ok(())
    }

    /// Stage `target` with the given contents.
    ///
    /// # Errors
    /// As [`stage`](Self::stage), and [`Error::Io`] if the bytes cannot be written.
    pub fn stage_bytes(&mut self, target: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
        let target = target.as_ref();
        self.stage(target, |temp| {
            let file = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(temp)
                .map_err(|e| io_error(target, e))?;
            fill(target, file, |w| {
                w.write_all(bytes).map_err(|e| io_error(target, e))
            })
        })
    }

    /// Rename every staged file into place, in staging order.
    ///
    /// # Errors
    /// [`Error::Io`] naming the target that could not be replaced; every temporary file is then
    /// removed and the targets replaced so far are restored (see the type's docs).
    pub fn commit(mut self) -> Result<()> {
        let staged = std::mem::take(&mut self.staged);
        // Hard links to the current targets, to undo a partial commit.
        let mut backups: Vec<Backup> = Vec::with_capacity(staged.len());
        let mut guards: Vec<TempFile> = staged
            .iter()
            .map(|s| TempFile(Some(s.temp.clone())))
            .collect();
        let result = (|| {
            for s in &staged {
                let b = backup(&s.target)?;
                if let Backup::Linked(link) = &b {
                    guards.push(TempFile(Some(link.clone())));
                }
                backups.push(b);
            }
            for (i, s) in staged.iter().enumerate() {
                if let Err(e) = fs::rename(&s.temp, &s.target) {
                    for (done, b) in staged[..i].iter().zip(&backups) {
                        // Best effort: restore the previous file, or remove the new one.
                        let _ = match b {
                            Backup::Linked(link) => fs::rename(link, &done.target),
                            Backup::Absent => fs::remove_file(&done.target),
                            Backup::Unavailable => Ok(()),
                        };
                    }
                    return Err(io_error(&s.target, e));
                }
                guards[i].0 = None;
            }
            Ok(())
        })();
        drop(guards); // removes the backups and any temporary file left
        result
    }
}

/// How a commit can undo the replacement of one target.
enum Backup {
    /// Nothing was there: remove the new file.
    Absent,
    /// A hard link to the previous file: rename it back.
    Linked(PathBuf),
    /// Something was there that could not be linked: leave the new file.
    Unavailable,
}

/// A hard link to `target` under a temporary name, if `target` exists.
fn backup(target: &Path) -> Result<Backup> {
    if fs::symlink_metadata(target).is_err() {
        return Ok(Backup::Absent);
    }
    let link = temp_sibling(target)?;
    Ok(match fs::hard_link(target, &link) {
        Ok(()) => Backup::Linked(link),
        Err(_) => Backup::Unavailable,
    })
}

impl Drop for OutputSet {
    fn drop(&mut self) {
        for s in self.staged.drain(..) {
            let _ = fs::remove_file(s.temp);
        }
    }
}

/// A writer that remembers its first error and then accepts (and discards) everything, so that
/// a writer wrapping it (the zip writer, whose `Drop` finalises the archive and prints on
/// failure) never sees a second error; [`Sticky::finish`] returns the first one.
pub(super) struct Sticky<W> {
    inner: W,
    failed: Option<std::io::Error>,
    /// Position and length as seen by the caller (virtual once failed).
    pos: u64,
    len: u64,
}

impl<W: Write + Seek> Sticky<W> {
    pub(super) fn new(inner: W) -> Self {
        Self {
            inner,
            failed: None,
            pos: 0,
            len: 0,
        }
    }

    /// The inner writer, or the first error.
    pub(super) fn finish(self) -> std::io::Result<W> {
        match self.failed {
            Some(e) => Err(e),
            None => Ok(self.inner),
        }
    }

    fn moved(&mut self, pos: u64) {
        self.pos = pos;
        self.len = self.len.max(pos);
    }
}

impl<W: Write + Seek> Write for Sticky<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.failed.is_none() {
            match self.inner.write(buf) {
                Ok(n) => {
                    self.moved(self.pos.saturating_add(n as u64));
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Err(e),
                Err(e) => self.failed = Some(e),
            }
        }
        self.moved(self.pos.saturating_add(buf.len() as u64));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.failed.is_none()
            && let Err(e) = self.inner.flush()
        {
            self.failed = Some(e);
        }
        Ok(())
    }
}

impl<W: Write + Seek> Seek for Sticky<W> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        if self.failed.is_none() {
            match self.inner.seek(to) {
                Ok(p) => {
                    self.moved(p);
                    return Ok(p);
                }
                Err(e) => self.failed = Some(e),
            }
        }
        let base = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        let p = base.unwrap_or(0);
        self.moved(p);
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::format_error;

    #[test]
    fn atomic_write_leaves_nothing_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        let err = write_atomically(&target, |w| {
            w.write_all(b"partial").unwrap();
            Err(format_error(&target, None, "simulated failure"))
        });
        assert!(err.is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        write_atomically(&target, |w| {
            w.write_all(b"ok").map_err(|e| io_error(&target, e))
        })
        .unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"ok");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temporary_names_are_short_whatever_the_target() {
        let long = "x".repeat(255);
        let t = temp_sibling(&Path::new("d").join(&long)).unwrap();
        let name = t.file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len(), ".llfc-0123456789abcdef.tmp".len(), "{name}");
        assert_ne!(t, temp_sibling(&Path::new("d").join(&long)).unwrap());
    }

    #[test]
    fn a_failed_commit_restores_every_target() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, b"old a").unwrap();
        let mut set = OutputSet::new();
        set.stage_bytes(&a, b"new a").unwrap();
        set.stage_bytes(&b, b"new b").unwrap();
        // The second rename fails: `b` became a non-empty directory after staging.
        fs::create_dir(&b).unwrap();
        fs::write(b.join("inside"), b"").unwrap();
        assert!(set.commit().is_err());
        assert_eq!(fs::read(&a).unwrap(), b"old a");
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn sticky_writer_reports_the_first_error_only() {
        #[derive(Debug)]
        struct Full(u64);
        impl Write for Full {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if self.0 + buf.len() as u64 > 10 {
                    return Err(std::io::Error::other("disk full"));
                }
                self.0 += buf.len() as u64;
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl Seek for Full {
            fn seek(&mut self, _: SeekFrom) -> std::io::Result<u64> {
                Ok(self.0)
            }
        }
        let mut s = Sticky::new(Full(0));
        s.write_all(b"12345").unwrap();
        s.write_all(b"123456789").unwrap(); // fails inside, accepted outside
        assert_eq!(s.stream_position().unwrap(), 14);
        assert_eq!(s.seek(SeekFrom::End(0)).unwrap(), 14);
        assert_eq!(s.finish().unwrap_err().to_string(), "disk full");
    }
}
