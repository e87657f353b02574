//! The durable side of IPAM: reservations on disk, one file per address.
//!
//! Layout, under `<dataDir>/<network name>/`:
//! - `<address>` (e.g. `10.244.1.5`): one per reserved address, holding the
//!   container ID and the interface name on two lines;
//! - `last_reserved_ip`: the allocation cursor, only a hint for where the
//!   next search starts (the address files are the truth);
//! - `lock`: taken with an exclusive `flock` for the whole
//!   load-decide-write sequence, so concurrent plugin processes (the runtime
//!   runs ADDs for different pods in parallel) never pick the same address.
//!
//! A reservation goes to a temporary file that is fsynced, renamed into
//! place, and followed by an fsync of the directory, so an acknowledged
//! reservation survives a crash and a torn file is never seen. The
//! directory fsync is handed back as a [`PendingSync`]: the rename is
//! already visible to the next lock holder, so ADD overlaps that fsync with
//! its kernel work and only waits for it before printing its result. The cursor is
//! replaced the same way, but its contents are not fsynced: losing its
//! latest value in a crash only moves where the next search starts (the
//! address files are the truth), and it saves an fsync per ADD. The lock is released when
//! the store is dropped (closing the file drops the `flock`), also when the
//! process dies.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::ipam::{Owner, Reservations};

const CURSOR_FILE: &str = "last_reserved_ip";
const LOCK_FILE: &str = "lock";
const TEMP_PREFIX: &str = ".tmp-";

/// The narrow view of reservation storage that the commands need. An
/// implementation holds the network's exclusive lock for its lifetime.
pub trait ReservationStore {
    fn load(&mut self) -> Result<Reservations, StoreError>;
    /// Records `address` for `owner` and moves the cursor to it.
    /// The reservation is visible to the next holder of the lock at once,
    /// and durable once the returned [`PendingSync`] completes.
    fn reserve(&mut self, address: Ipv4Addr, owner: &Owner) -> Result<PendingSync, StoreError>;
    /// Forgets `address`; a missing record is not an error.
    fn release(&mut self, address: Ipv4Addr) -> Result<(), StoreError>;
}

/// The last step of making a reservation durable: the fsync of the
/// directory that holds the renamed file. It needs no lock, so an ADD runs
/// it alongside its kernel work and waits for it before answering.
#[must_use = "a reservation is durable only once its sync completes"]
#[derive(Debug, Default)]
pub struct PendingSync {
    directories: Vec<PathBuf>,
}

impl PendingSync {
    pub fn complete(self) -> Result<(), StoreError> {
        for directory in &self.directories {
            File::open(directory)
                .and_then(|dir| dir.sync_all())
                .map_err(io_error("fsync", directory))?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the fsync of a reservation was interrupted")]
    SyncInterrupted,
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Reservations in a directory, under its `flock`.
pub struct FsReservationStore {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl FsReservationStore {
    /// Creates the directory if needed and blocks until the lock is ours.
    pub fn open_locked(data_dir: &Path, network: &str) -> Result<FsReservationStore, StoreError> {
        let dir = data_dir.join(network);
        fs::create_dir_all(&dir).map_err(io_error("create the IPAM directory", &dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error("open the IPAM lock file", &lock_path))?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| io_error("lock", &lock_path)(io::Error::from(errno)))?;
        Ok(FsReservationStore { dir, _lock: lock })
    }

    /// The store of a network whose directory does not exist has nothing
    /// to release; DEL uses this to avoid creating directories.
    pub fn exists(data_dir: &Path, network: &str) -> bool {
        data_dir.join(network).is_dir()
    }

    /// Replaces `name` atomically; with `sync`, its contents are durable
    /// before the rename (the directory still needs its own fsync).
    fn replace_file(&self, name: &str, contents: &str, sync: bool) -> Result<(), StoreError> {
        let target = self.dir.join(name);
        let temp = self
            .dir
            .join(format!("{TEMP_PREFIX}{name}-{}", std::process::id()));
        let mut file = File::create(&temp).map_err(io_error("create", &temp))?;
        file.write_all(contents.as_bytes())
            .map_err(io_error("write", &temp))?;
        if sync {
            file.sync_all().map_err(io_error("fsync", &temp))?;
        }
        drop(file);
        fs::rename(&temp, &target).map_err(io_error("rename into place", &target))?;
        Ok(())
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error("fsync", &self.dir))
    }
}

impl ReservationStore for FsReservationStore {
    fn load(&mut self) -> Result<Reservations, StoreError> {
        let mut reservations = Reservations::default();
        let entries = fs::read_dir(&self.dir).map_err(io_error("list", &self.dir))?;
        for entry in entries {
            let entry = entry.map_err(io_error("list", &self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == CURSOR_FILE {
                reservations.last_reserved = fs::read_to_string(entry.path())
                    .ok()
                    .and_then(|text| text.trim().parse().ok());
                continue;
            }
            let Ok(address) = name.parse::<Ipv4Addr>() else {
                // The lock file, temporary files of a crashed writer, or
                // anything else: not a reservation.
                continue;
            };
            let owner = fs::read_to_string(entry.path())
                .ok()
                .and_then(|text| parse_owner(&text));
            reservations.by_address.insert(address, owner);
        }
        Ok(reservations)
    }

    fn reserve(&mut self, address: Ipv4Addr, owner: &Owner) -> Result<PendingSync, StoreError> {
        self.replace_file(&address.to_string(), &render_owner(owner), true)?;
        self.replace_file(CURSOR_FILE, &format!("{address}\n"), false)?;
        Ok(PendingSync {
            directories: vec![self.dir.clone()],
        })
    }

    fn release(&mut self, address: Ipv4Addr) -> Result<(), StoreError> {
        let path = self.dir.join(address.to_string());
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(io_error("remove", &path)(err)),
        }
    }
}

fn render_owner(owner: &Owner) -> String {
    format!("{}\n{}\n", owner.container_id, owner.ifname)
}

fn parse_owner(text: &str) -> Option<Owner> {
    let mut lines = text.lines().map(str::trim);
    let container_id = lines.next().filter(|line| !line.is_empty())?;
    let ifname = lines.next().filter(|line| !line.is_empty())?;
    Some(Owner {
        container_id: container_id.to_string(),
        ifname: ifname.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(id: &str) -> Owner {
        Owner {
            container_id: id.into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn reservations_survive_reopening_and_release_removes_them() {
        let data = tempfile::tempdir().unwrap();
        let address: Ipv4Addr = "10.244.1.7".parse().unwrap();
        {
            let mut store = FsReservationStore::open_locked(data.path(), "skiff").unwrap();
            assert_eq!(store.load().unwrap(), Reservations::default());
            store
                .reserve(address, &owner("abc"))
                .unwrap()
                .complete()
                .unwrap();
        }
        let mut store = FsReservationStore::open_locked(data.path(), "skiff").unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.by_address.get(&address), Some(&Some(owner("abc"))));
        assert_eq!(loaded.last_reserved, Some(address));
        assert_eq!(
            fs::read_to_string(data.path().join("skiff/10.244.1.7")).unwrap(),
            "abc\neth0\n"
        );
        store.release(address).unwrap();
        store.release(address).unwrap();
        assert!(store.load().unwrap().by_address.is_empty());
    }

    #[test]
    fn unreadable_records_stay_reserved_without_an_owner() {
        let data = tempfile::tempdir().unwrap();
        let mut store = FsReservationStore::open_locked(data.path(), "skiff").unwrap();
        fs::write(data.path().join("skiff/10.244.1.9"), "").unwrap();
        fs::write(data.path().join("skiff/.tmp-10.244.1.3-1"), "half").unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.by_address.len(), 1);
        assert_eq!(
            loaded.by_address.get(&"10.244.1.9".parse().unwrap()),
            Some(&None)
        );
    }

    #[test]
    fn the_lock_excludes_a_second_holder() {
        let data = tempfile::tempdir().unwrap();
        let _held = FsReservationStore::open_locked(data.path(), "skiff").unwrap();
        let file = File::open(data.path().join("skiff/lock")).unwrap();
        assert!(Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err());
    }
}
