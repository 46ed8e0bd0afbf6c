//! The bundled container runtime. Today: the validated container
//! specification ([`spec`]) that `POST /containers/create` will produce, and
//! container cgroups with enforced limits ([`cgroup`]). The process side
//! (shim, namespaces, logs) and the API come next; see the README's "What is
//! not done yet".

pub mod cgroup;
pub mod container;
pub mod init;
pub mod logfile;
pub mod manager;
pub mod mounts;
pub mod netspec;
pub mod nsexec;
pub mod resolve;
pub mod shim;
pub mod spec;

#[cfg(test)]
mod tests;
