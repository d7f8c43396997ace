//! Image pull credentials from a pod's `imagePullSecrets` (`.dockerconfigjson` or
//! `.dockercfg`), matched to the image's registry as docker config keys name it.

use k8s_openapi::api::core::v1::Pod;

use super::link::Link;
use super::runtime::RegistryAuth;
use super::volumes;

/// The registry host an image comes from, as docker config keys name it.
pub(crate) fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

/// The credentials for pulling `image` for `pod`, if one of its pull secrets has them.
pub(crate) async fn pull_auth(link: &Link, pod: &Pod, image: &str) -> Option<RegistryAuth> {
    let spec = pod.spec.as_ref()?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let want = registry_of(image);
    for s in spec.image_pull_secrets.iter().flatten() {
        let data = volumes::secret_data(link, ns, &s.name)
            .await
            .ok()
            .flatten()?;
        let Some(raw) = data.get(".dockerconfigjson").or(data.get(".dockercfg")) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(raw) else {
            continue;
        };
        let auths = v.get("auths").unwrap_or(&v);
        for (server, entry) in auths.as_object().into_iter().flatten() {
            let host = server
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or_default();
            let host = if host == "index.docker.io" {
                "docker.io"
            } else {
                host
            };
            if host == want {
                let get = |k: &str| {
                    entry
                        .get(k)
                        .and_then(|x| x.as_str())
                        .unwrap_or("")
                        .to_owned()
                };
                return Some(RegistryAuth {
                    username: get("username"),
                    password: get("password"),
                    auth: get("auth"),
                    server: server.clone(),
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::registry_of;

    #[test]
    fn registries() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("library/busybox:1"), "docker.io");
        assert_eq!(registry_of("reg.example.com/a/b:1"), "reg.example.com");
        assert_eq!(registry_of("localhost:5000/a"), "localhost:5000");
    }
}
