//! The bundled container runtime. Today: the validated container
//! specification ([`spec`]) that `POST /containers/create` will produce. The
//! process side (shim, namespaces, cgroups, logs) and the API come next; see
//! the README's "What is not done yet".

pub mod spec;

#[cfg(test)]
mod tests;
