//! # maas-tftp
//!
//! A read-only TFTP server on tokio for network boot: RFC 1350 with option
//! negotiation (RFC 2347), block size up to 65464 (RFC 2348), `tsize` and
//! `timeout` (RFC 2349) and `windowsize` (RFC 7440); block-number rollover,
//! retransmission on timeout only (no sorcerer's apprentice), netascii, and
//! calm handling of a client's error after the option acknowledgement (OVMF
//! asks for a file's size, aborts, and asks again).
//!
//! Files come from a [`FileProvider`]: [`DirectoryProvider`] serves a
//! directory and nothing outside it; a rack implements the trait to render
//! boot configs per request, knowing the client and the local address it used.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use maas_tftp::{DirectoryProvider, TftpConfig, TftpServer};
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("pxelinux.0"), b"loader")?;
//! let server = TftpServer::bind("127.0.0.1:0".parse()?, DirectoryProvider::new(dir.path())?, TftpConfig::default()).await?;
//! let addr = server.local_addr()?;
//! tokio::spawn(server.serve());
//! # let _ = addr;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

pub mod packet;
mod provider;
mod server;

pub use provider::{DirectoryProvider, FileProvider, FileRequest, FileSource, ProviderError};
pub use server::{MAX_BACKOFF, TftpConfig, TftpMetrics, TftpServer};
