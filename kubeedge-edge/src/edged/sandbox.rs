//! The pod sandbox image. Edge sites are often air-gapped, so when the configured
//! `podSandboxImage` is absent (not set, not present and not pullable) edged imports its own:
//! a root filesystem holding one static "pause" program that blocks forever. On x86-64 the
//! program is a 129-byte ELF written here (a `pause(2)` loop); elsewhere a static busybox
//! found on the host runs `sleep` instead.

use tracing::{info, warn};

use k8s_openapi::api::core::v1::Pod;

use super::runtime::{
    ContainerConfig, ContainerRuntime, NetworkMode, PortMapping, Result, RuntimeError, SANDBOX,
};
use super::spec;

/// The reference of the built-in sandbox image.
pub const BUILTIN_SANDBOX_IMAGE: &str = concat!("kubeedge-rs/pause:", env!("CARGO_PKG_VERSION"));

/// A minimal static x86-64 Linux executable: `loop { pause() }`.
fn pause_elf_x86_64() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const EH: u16 = 64; // ELF header size
    const PH: u16 = 56; // one program header
                        // mov eax, 34 (SYS_pause); syscall; jmp back to the mov.
    const CODE: [u8; 9] = [0xb8, 0x22, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7];
    let total = u64::from(EH) + u64::from(PH) + CODE.len() as u64;
    let mut f = Vec::with_capacity(total as usize);
    f.extend_from_slice(b"\x7fELF");
    f.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little endian, version 1, System V ABI
    f.extend_from_slice(&[0; 8]); // padding
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    f.extend_from_slice(&(BASE + u64::from(EH) + u64::from(PH)).to_le_bytes()); // entry
    f.extend_from_slice(&u64::from(EH).to_le_bytes()); // program headers offset
    f.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    f.extend_from_slice(&0u32.to_le_bytes()); // flags
    for v in [EH, PH, 1, 0, 0, 0] {
        // header size, phentsize, phnum, shentsize, shnum, shstrndx
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    f.extend_from_slice(&5u32.to_le_bytes()); // R + X
    f.extend_from_slice(&0u64.to_le_bytes()); // file offset
    f.extend_from_slice(&BASE.to_le_bytes()); // vaddr
    f.extend_from_slice(&BASE.to_le_bytes()); // paddr
    f.extend_from_slice(&total.to_le_bytes()); // file size
    f.extend_from_slice(&total.to_le_bytes()); // memory size
    f.extend_from_slice(&0x1000u64.to_le_bytes()); // alignment
    f.extend_from_slice(&CODE);
    f
}

fn tar_with(files: &[(&str, &[u8])]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, path, *data)?;
    }
    b.into_inner()
}

/// The root filesystem and the entrypoint of the built-in sandbox image.
pub(crate) fn builtin_rootfs() -> std::io::Result<(Vec<u8>, Vec<String>)> {
    if cfg!(target_arch = "x86_64") {
        let tar = tar_with(&[("pause", &pause_elf_x86_64())])?;
        return Ok((tar, vec![r#"ENTRYPOINT ["/pause"]"#.to_owned()]));
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .ok_or_else(|| std::io::Error::other("no static busybox on this host for the sandbox"))?;
    let tar = tar_with(&[("bin/busybox", &busybox)])?;
    Ok((
        tar,
        vec![r#"ENTRYPOINT ["/bin/busybox", "sleep", "2147483647"]"#.to_owned()],
    ))
}

/// The sandbox image to use: `configured` when it is present or can be pulled, otherwise the
/// built-in one (imported when missing). A runtime that picks its own sandbox image (the
/// CRI's) gets `configured` as it is, unchecked.
pub(crate) async fn ensure_sandbox_image<R: ContainerRuntime>(
    runtime: &R,
    configured: Option<&str>,
) -> Result<String> {
    if runtime.manages_sandbox_image() {
        return Ok(configured.unwrap_or_default().to_owned());
    }
    if let Some(image) = configured.filter(|i| !i.is_empty()) {
        if runtime.image(image).await?.is_some() {
            return Ok(image.to_owned());
        }
        match runtime.pull_image(image, None).await {
            Ok(()) => return Ok(image.to_owned()),
            Err(e) if e.is_unavailable() => return Err(e),
            Err(e) => {
                warn!(error = %e, image, "podSandboxImage unavailable; using the built-in sandbox")
            }
        }
    }
    if runtime.image(BUILTIN_SANDBOX_IMAGE).await?.is_none() {
        let (tar, changes) = builtin_rootfs().map_err(|e| RuntimeError::Refused {
            status: 500,
            message: e.to_string(),
        })?;
        runtime
            .import_image(BUILTIN_SANDBOX_IMAGE, tar, changes)
            .await?;
        info!(
            image = BUILTIN_SANDBOX_IMAGE,
            "imported the built-in sandbox image"
        );
    }
    Ok(BUILTIN_SANDBOX_IMAGE.to_owned())
}

/// The sandbox container of `pod` (its `attempt`-th): the pod's network (the host's with
/// `hostNetwork`, else a bridge with the host ports of its containers published), its PID
/// namespace, hostname, resolver settings and labels.
pub(crate) fn sandbox_config(
    pod: &Pod,
    node: &str,
    image: String,
    attempt: u32,
    dns: Option<super::DnsConfig>,
) -> std::result::Result<ContainerConfig, String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let mut ports = Vec::new();
    if !host_network {
        for p in spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
        {
            let Some(host_port) = p.host_port.and_then(|h| u16::try_from(h).ok()) else {
                continue;
            };
            if host_port == 0 {
                continue;
            }
            ports.push(PortMapping {
                container_port: u16::try_from(p.container_port)
                    .map_err(|_| format!("invalid containerPort {}", p.container_port))?,
                host_port,
                host_ip: p.host_ip.clone().unwrap_or_default(),
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
            });
        }
    }
    Ok(ContainerConfig {
        name: format!("{}-{attempt}", spec::container_name(pod, SANDBOX, 0)),
        image,
        labels: spec::pod_labels(pod, node, SANDBOX),
        network: if host_network {
            NetworkMode::Host
        } else {
            NetworkMode::Bridge
        },
        ports,
        pid: spec::pid_mode(&spec, None),
        hostname: (!host_network).then(|| pod.metadata.name.clone()).flatten(),
        dns,
        ..ContainerConfig::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_is_a_tiny_elf() {
        let elf = pause_elf_x86_64();
        assert_eq!(elf.len(), 129);
        assert_eq!(&elf[..4], b"\x7fELF");
        let (tar, changes) = builtin_rootfs().unwrap();
        assert!(tar.len() >= 1024);
        assert!(changes[0].starts_with("ENTRYPOINT"));
    }
}
