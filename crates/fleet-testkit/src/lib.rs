//! Test support. Everything here starts real components (no fakes) and tears them down on
//! drop, also when a test fails; every wait is bounded.

pub mod etcd;
pub mod measure;
pub mod sshd;
pub mod systemd;

pub use etcd::{DataDir, EtcdCluster, EtcdServer, TlsFiles};
pub use sshd::SshServer;
pub use systemd::SystemdSandbox;
