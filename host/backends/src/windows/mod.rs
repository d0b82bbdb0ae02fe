//! The `windows` backend: a real Windows Server, reached through the
//! Service Control Manager ([`scm`]), NTFS access lists ([`ntfs`]) and the
//! WSUS administration API ([`wsus`]).
//!
//! Each part is split the same way: the system calls sit behind a small
//! trait with one implementation compiled only on Windows, and every
//! decision above them (state and error tables, waits, what an access list
//! lacks, the helper's protocol) is plain Rust compiled and unit-tested on
//! every platform against fakes of that trait.

pub mod ntfs;
pub mod scm;
pub mod wsus;
