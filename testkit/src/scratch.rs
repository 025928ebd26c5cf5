//! A scratch directory under the system temp dir, removed on drop (also when
//! the test fails), uniquely named so parallel tests never collide.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

/// A fresh, empty directory `<tmp>/fluxgate-<what>-<pid>-<n>`, removed on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates the directory.
    pub fn new(what: &str) -> ScratchDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fluxgate-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        ScratchDir(dir)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// `name` inside it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `text` to `name` inside it; returns the path.
    pub fn write(&self, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write a scratch file");
        p
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_dir_is_unique_and_gone_after_drop() {
        let (a, b) = (ScratchDir::new("t"), ScratchDir::new("t"));
        assert_ne!(a.dir(), b.dir());
        let file = a.write("x", "1");
        assert_eq!(std::fs::read_to_string(&file).ok().as_deref(), Some("1"));
        let dir = a.dir().to_path_buf();
        drop(a);
        assert!(!dir.exists());
    }
}
