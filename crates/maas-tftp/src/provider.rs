//! Where files come from: the [`FileProvider`] trait and [`DirectoryProvider`].
//!
//! API Boundary: a provider sees who asks (peer address), on which local
//! address the request arrived (so a rack can render per-interface URLs), and
//! the path; it returns a reader and, if known, the size (for `tsize`).

use std::io;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use tokio::io::AsyncRead;

/// Who asks for what.
#[derive(Debug, Clone, Copy)]
pub struct FileRequest<'a> {
    /// The client.
    pub peer: SocketAddr,
    /// The server address the request was sent to.
    pub local: SocketAddr,
    /// The path as the client sent it.
    pub path: &'a str,
}

/// An open file.
pub struct FileSource {
    /// The content.
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    /// Its size in bytes, when known in advance.
    pub size: Option<u64>,
}

impl FileSource {
    /// A source over bytes in memory (rendered configs).
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        let bytes = bytes.into();
        let size = Some(bytes.len() as u64);
        FileSource {
            reader: Box::new(io::Cursor::new(bytes)),
            size,
        }
    }
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Why a file cannot be served. Becomes a TFTP error packet.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// No such file.
    #[error("file not found: {path}")]
    NotFound {
        /// The requested path.
        path: String,
    },
    /// The path is refused (escapes the root, names a directory...).
    #[error("access violation: {path}: {reason}")]
    AccessDenied {
        /// The requested path.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// The provider could not produce the file (a render or lookup failed).
    #[error("cannot provide {path}: {reason}")]
    Failed {
        /// The requested path.
        path: String,
        /// Why, for the client's error packet (no secrets).
        reason: String,
    },
    /// Reading failed.
    #[error("cannot read {path}")]
    Io {
        /// The requested path.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A source of files for the TFTP server.
#[async_trait]
pub trait FileProvider: Send + Sync + 'static {
    /// Opens the requested file. Called on the transfer's own task, so a slow
    /// open (a rendered config, a remote fetch) never blocks other requests.
    async fn open(&self, request: &FileRequest<'_>) -> Result<FileSource, ProviderError>;
}

/// Serves files under one directory, and nothing outside it.
///
/// A leading `/` means the root (as `tftpd-hpa --secure` does: GRUB and some
/// firmware send one); `\` separators are read as `/` (Windows-style PXE
/// clients). Refused: `..` components, NUL bytes, and symbolic links whose
/// target lies outside the root.
#[derive(Debug, Clone)]
pub struct DirectoryProvider {
    root: PathBuf,
}

impl DirectoryProvider {
    /// A provider for `root`, which must be an existing directory.
    pub fn new(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = std::fs::canonicalize(root.as_ref())?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(DirectoryProvider { root })
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path under the root that `requested` names, checked lexically.
    pub fn resolve(&self, requested: &str) -> Result<PathBuf, ProviderError> {
        let denied = |reason| ProviderError::AccessDenied {
            path: requested.to_owned(),
            reason,
        };
        if requested.contains('\0') {
            return Err(denied("NUL byte in path"));
        }
        let normalized = requested.replace('\\', "/");
        let relative = normalized.trim_start_matches('/');
        if relative.is_empty() {
            return Err(denied("no file name"));
        }
        let mut out = self.root.clone();
        for c in Path::new(relative).components() {
            match c {
                Component::Normal(part) => out.push(part),
                Component::CurDir => {}
                Component::ParentDir => return Err(denied("'..' is not allowed")),
                Component::RootDir | Component::Prefix(_) => return Err(denied("absolute path")),
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl FileProvider for DirectoryProvider {
    async fn open(&self, request: &FileRequest<'_>) -> Result<FileSource, ProviderError> {
        let path = self.resolve(request.path)?;
        let name = || request.path.to_owned();
        let real = match tokio::fs::canonicalize(&path).await {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ProviderError::NotFound { path: name() });
            }
            Err(source) => {
                return Err(ProviderError::Io {
                    path: name(),
                    source,
                });
            }
        };
        if !real.starts_with(&self.root) {
            return Err(ProviderError::AccessDenied {
                path: name(),
                reason: "a symbolic link leads outside the root",
            });
        }
        // Open what was checked, not the name (which could be swapped).
        let file = match tokio::fs::File::open(&real).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ProviderError::NotFound { path: name() });
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(ProviderError::AccessDenied {
                    path: name(),
                    reason: "permission denied",
                });
            }
            Err(source) => {
                return Err(ProviderError::Io {
                    path: name(),
                    source,
                });
            }
        };
        let meta = file.metadata().await.map_err(|source| ProviderError::Io {
            path: name(),
            source,
        })?;
        if !meta.is_file() {
            return Err(ProviderError::AccessDenied {
                path: name(),
                reason: "not a regular file",
            });
        }
        Ok(FileSource {
            reader: Box::new(file),
            size: Some(meta.len()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str) -> FileRequest<'_> {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        FileRequest {
            peer: a,
            local: a,
            path,
        }
    }

    #[tokio::test]
    async fn escapes_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ok.bin"), b"hello").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link-out"))
            .unwrap();
        std::os::unix::fs::symlink(dir.path().join("ok.bin"), dir.path().join("link-in")).unwrap();
        let p = DirectoryProvider::new(dir.path()).unwrap();

        for ok in ["ok.bin", "/ok.bin", "./ok.bin", "link-in", "\\ok.bin"] {
            assert_eq!(p.open(&req(ok)).await.unwrap().size, Some(5), "{ok}");
        }
        for (bad, why) in [
            ("../secret", "'..' is not allowed"),
            ("sub/../../secret", "'..' is not allowed"),
            ("..\\secret", "'..' is not allowed"),
            ("a\0b", "NUL byte in path"),
            ("link-out", "a symbolic link leads outside the root"),
            ("sub", "not a regular file"),
            ("/", "no file name"),
        ] {
            match p.open(&req(bad)).await {
                Err(ProviderError::AccessDenied { reason, .. }) => {
                    assert_eq!(reason, why, "{bad:?}")
                }
                other => panic!("{bad:?}: expected AccessDenied, got {other:?}"),
            }
        }
        assert!(matches!(
            p.open(&req("missing")).await,
            Err(ProviderError::NotFound { .. })
        ));
        assert!(
            matches!(
                p.open(&req("/etc/passwd")).await,
                Err(ProviderError::NotFound { .. })
            ),
            "a leading / means the root"
        );
    }
}
