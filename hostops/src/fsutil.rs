//! Crash-safe file writes that never follow a link someone else planted.
//!
//! A reader sees either the old file or the new one, never a mix: temp file → exact mode and
//! owner → fsync → rename → fsync the directory. Every step acts on file descriptors: the
//! directory is opened once and the temp file is created in it with `O_CREAT|O_EXCL|
//! O_NOFOLLOW` under an unpredictable name, so a symlink or hard link planted by a local user
//! who can write in the directory is never written through, chmod-ed or chown-ed.
//! [`ManagedDir`] opens a managed directory by walking its components with `O_NOFOLLOW`, so a
//! directory swapped for a symlink after the path was checked is refused too.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path};

use rand::RngCore;
use rustix::fs::{AtFlags, Mode, OFlags, CWD};

/// Writes `bytes` to `path` atomically. `mode` applies to the new file (e.g. 0o600 for keys).
/// For the agent's own files: the directory may be reached through symlinks (the
/// administrator's layout), the file itself never is.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let (dir, name) = split(path)?;
    let dir = open_dir(dir)?;
    replace_in(&dir, name, bytes, mode, None)
}

/// A directory opened so that files in it are read and replaced relative to it.
pub struct ManagedDir {
    fd: OwnedFd,
}

/// A regular file as read through [`ManagedDir::read`].
pub struct ReadFile {
    pub content: Vec<u8>,
    pub metadata: fs::Metadata,
}

impl ManagedDir {
    /// Opens `dir`, an absolute path, refusing any symlink on the way (`O_NOFOLLOW` on every
    /// component): the path must already be the resolved one.
    pub fn open(dir: &Path) -> io::Result<Self> {
        if !dir.is_absolute() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a managed directory must be an absolute path",
            ));
        }
        let mut fd = open_dir(Path::new("/"))?;
        for component in dir.components() {
            match component {
                Component::RootDir => {}
                Component::Normal(name) => {
                    fd = rustix::fs::openat(
                        &fd,
                        name,
                        dir_flags() | OFlags::NOFOLLOW,
                        Mode::empty(),
                    )
                    .map_err(|e| symlink_hint(io::Error::from(e), dir))?;
                }
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{} is not a resolved path", dir.display()),
                    ))
                }
            }
        }
        Ok(Self { fd })
    }

    /// Opens `dir`, refusing a final symlink and a directory not owned by `uid` (one made
    /// by [`private_dir_for`] earlier, not one someone else planted).
    pub fn open_owned_by(dir: &Path, uid: u32) -> io::Result<Self> {
        let fd = rustix::fs::openat(CWD, dir, dir_flags() | OFlags::NOFOLLOW, Mode::empty())?;
        let owner = rustix::fs::fstat(&fd)?.st_uid;
        if owner != uid {
            return Err(io::Error::other(format!(
                "{} is owned by uid {owner}, not {uid}",
                dir.display()
            )));
        }
        Ok(Self { fd })
    }

    /// The regular file `name` in this directory, at most `limit` bytes; `None` when absent.
    /// A final symlink is refused (`O_NOFOLLOW`), and so is anything but a regular file;
    /// FIFOs cannot block the open (`O_NONBLOCK`).
    pub fn read(&self, name: &str, limit: usize) -> io::Result<Option<ReadFile>> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::LOOP) => {
                return Err(io::Error::other(format!("{name} is a symbolic link")))
            }
            Err(e) => return Err(e.into()),
        };
        let file = File::from(fd);
        let metadata = file.metadata()?;
        if !metadata.file_type().is_file() {
            return Err(io::Error::other(format!(
                "{name} is not a regular file (directory, device, FIFO or socket)"
            )));
        }
        let mut content = Vec::new();
        file.take(limit as u64 + 1).read_to_end(&mut content)?;
        Ok(Some(ReadFile { content, metadata }))
    }

    /// Replaces `name` atomically with `bytes`, `mode` and `owner`.
    pub fn replace(
        &self,
        name: &str,
        bytes: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> io::Result<()> {
        replace_in(&self.fd, name, bytes, mode, owner)
    }

    /// Removes `name` (an unlink never follows a link) and makes that durable.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        rustix::fs::fsync(&self.fd).map_err(Into::into)
    }
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC
}

fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    rustix::fs::openat(CWD, dir, dir_flags(), Mode::empty()).map_err(Into::into)
}

fn symlink_hint(error: io::Error, dir: &Path) -> io::Error {
    let refused = [rustix::io::Errno::LOOP, rustix::io::Errno::NOTDIR]
        .map(|errno| Some(errno.raw_os_error()));
    if refused.contains(&error.raw_os_error()) {
        io::Error::other(format!(
            "{} has a symbolic link or a non-directory on its path",
            dir.display()
        ))
    } else {
        error
    }
}

fn split(path: &Path) -> io::Result<(&Path, &str)> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no UTF-8 name"))?;
    Ok((dir, name))
}

/// Temp file (exclusive, no-follow, unpredictable name) → exact mode and owner on the
/// descriptor → content → fsync → rename over `name` → fsync the directory.
fn replace_in(
    dir: &impl AsFd,
    name: &str,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let mut random = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let temp = format!(".{name}.tmp-{}", hex::encode(random));
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, temp.as_str(), flags, Mode::from_raw_mode(0o600))?;
    let result = (|| {
        let mut file = File::from(fd);
        // On the descriptor: the umask does not apply, and no path is looked up again.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        rustix::fs::renameat(dir, temp.as_str(), dir, name)?;
        rustix::fs::fsync(dir).map_err(io::Error::from)
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(dir, temp.as_str(), AtFlags::empty());
    }
    result
}

/// Makes a rename or unlink in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` (and parents) with mode 0700 if it does not exist.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates `dir` fresh (an existing entry of that name, link or not, is an error), owned by
/// `owner` with mode 0700, and opens it: a private place for another account.
pub fn private_dir_for(dir: &Path, owner: (u32, u32)) -> io::Result<ManagedDir> {
    let (parent, name) = split(dir)?;
    let parent_fd = open_dir(parent)?;
    rustix::fs::mkdirat(&parent_fd, name, Mode::from_raw_mode(0o700))?;
    let fd = rustix::fs::openat(
        &parent_fd,
        name,
        dir_flags() | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    std::os::unix::fs::fchown(&fd, Some(owner.0), Some(owner.1))?;
    Ok(ManagedDir { fd })
}

/// What [`ensure_private_dir`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrivateDir {
    Created,
    Private,
    /// It was readable or writable by others: it is now 0700 (as its mode said before).
    Tightened {
        was: u32,
    },
}

/// Makes `dir` a private directory: created 0700 (with its parents) if absent; if present it
/// must be a directory owned by this user, and one that others could read, enter or write is
/// tightened to 0700. A directory owned by someone else is refused: they could replace what
/// we keep there.
pub fn ensure_private_dir(dir: &Path) -> io::Result<PrivateDir> {
    let metadata = match fs::metadata(dir) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_private_dir(dir)?;
            return Ok(PrivateDir::Created);
        }
        Err(e) => return Err(e),
    };
    if !metadata.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let me = rustix::process::geteuid().as_raw();
    if metadata.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is owned by uid {}, not by this user (uid {me}); refusing to keep secrets there",
                dir.display(),
                metadata.uid()
            ),
        ));
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(PrivateDir::Private);
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    Ok(PrivateDir::Tightened { was: mode })
}

/// Creates `path` 0600 if absent and tightens it to 0600 if others could read it: for files
/// another program creates with the umask's mode (the SQLite database, whose journal files
/// take the database file's mode).
pub fn ensure_private_file(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
    {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let metadata = fs::symlink_metadata(path)?;
    if !metadata.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if metadata.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write_atomic(&path, b"old", 0o600).unwrap();
        write_atomic(&path, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp files left behind");
    }

    #[test]
    fn private_dirs_are_created_tightened_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        assert_eq!(ensure_private_dir(&data).unwrap(), PrivateDir::Created);
        assert_eq!(
            fs::metadata(&data).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            ensure_private_dir(&data).unwrap(),
            PrivateDir::Tightened { was: 0o755 }
        );
        assert_eq!(ensure_private_dir(&data).unwrap(), PrivateDir::Private);
        let file = data.join("db");
        ensure_private_file(&file).unwrap();
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        ensure_private_file(&file).unwrap();
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(ensure_private_dir(&file).is_err(), "not a directory");
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, "precious").unwrap();
        let managed = dir.path().join("managed");
        fs::create_dir(&managed).unwrap();
        std::os::unix::fs::symlink(&outside, managed.join("app.conf")).unwrap();
        let opened = ManagedDir::open(&fs::canonicalize(&managed).unwrap()).unwrap();
        assert!(
            opened.read("app.conf", 100).is_err(),
            "a final symlink is refused"
        );
        opened.replace("app.conf", b"new", 0o644, None).unwrap();
        assert_eq!(fs::read_to_string(&outside).unwrap(), "precious");
        assert!(fs::symlink_metadata(managed.join("app.conf"))
            .unwrap()
            .file_type()
            .is_file());
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir(root.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), root.join("conf.d")).unwrap();
        let error = ManagedDir::open(&root.join("conf.d")).err().unwrap();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert!(ManagedDir::open(&root.join("elsewhere")).is_ok());
    }
}
