//! The pause image the agent carries, and the check that containerd's
//! sandbox image is present, so that a node without a registry never tries
//! to pull it.
//!
//! The pause program (`packaging/pause/pause.c`, compiled static by the
//! build script) is embedded in the agent as [`PAUSE_BINARY`]; [`image`]
//! wraps it in a one-file OCI image under any name.
//!
//! Mechanism: [`keep_sandbox_image`] runs for the agent's lifetime. Each
//! round, [`ensure_sandbox_image`] reads the runtime's configured sandbox
//! image from CRI `Status` (verbose: `info["config"]` → `sandboxImage`,
//! which containerd reports), asks `ImageStatus` whether it is present, and
//! if not, writes the embedded image under exactly that name to a scratch
//! file and imports it with the agent's [`ImageImporter`] (namespace
//! `k8s.io`). The round repeats every [`CHECK_INTERVAL`], and every
//! [`RETRY_INTERVAL`] while the runtime is unreachable, so a containerd
//! that restarts, changes its configuration or loses the image gets it
//! back without a hook in the pod runtime. The decisions are pure
//! ([`sandbox_image_name`], [`normalize_reference`]); the runtime is behind
//! the narrow [`SandboxImageRuntime`] trait.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::images::{ImageImportError, ImageImporter};
use crate::oci::{self, OciError, OciImage};

/// The static pause binary, built from `packaging/pause/pause.c`.
pub const PAUSE_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// The name `skiff-agent pause-image` uses when given none, and the sandbox
/// image that Skiff's own containerd configurations name.
pub const DEFAULT_IMAGE_NAME: &str = "skiff.local/pause:3.9";

/// How often the sandbox image is checked while the runtime answers.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// How often it is checked while the runtime does not answer.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(2);

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SandboxImageError {
    #[error("the container runtime is unavailable ({call}): {message}")]
    Unavailable { call: &'static str, message: String },
    #[error("{call} failed: {message}")]
    Failed { call: &'static str, message: String },
    #[error(
        "the container runtime does not report its sandbox image ({reason}); \
         configure it, e.g. sandbox_image = \"{DEFAULT_IMAGE_NAME}\" under \
         [plugins.\"io.containerd.grpc.v1.cri\"] in containerd's config.toml"
    )]
    NameUnknown { reason: String },
    #[error(
        "the sandbox image {name:?} cannot be provided locally: {reason}; configure \
         sandbox_image = \"{DEFAULT_IMAGE_NAME}\" (or any name:tag) in containerd"
    )]
    UnusableName { name: String, reason: String },
    #[error(transparent)]
    Image(#[from] OciError),
    #[error("cannot write the pause image to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Import(#[from] ImageImportError),
}

impl SandboxImageError {
    fn from_status(call: &'static str, status: tonic::Status) -> SandboxImageError {
        let message = status.message().to_owned();
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                SandboxImageError::Unavailable { call, message }
            }
            _ => SandboxImageError::Failed { call, message },
        }
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, SandboxImageError::Unavailable { .. })
    }
}

/// The pause image under `name`: `/pause` alone, as the entrypoint.
pub fn image_builder(name: &str) -> oci::ImageBuilder {
    oci::ImageBuilder::new(name)
        .file("pause", 0o755, PAUSE_BINARY)
        .entrypoint(&["/pause"])
        .env(&[])
}

/// The pause image tarball under `name`.
pub fn image(name: &str) -> Result<OciImage, OciError> {
    image_builder(name).build()
}

/// The sandbox image named in a CRI `Status` answer's verbose info.
pub fn sandbox_image_name(info: &HashMap<String, String>) -> Result<String, SandboxImageError> {
    let unknown = |reason: &str| SandboxImageError::NameUnknown {
        reason: reason.to_owned(),
    };
    let config = info
        .get("config")
        .ok_or_else(|| unknown("no \"config\" in the verbose Status"))?;
    let config: serde_json::Value = serde_json::from_str(config)
        .map_err(|error| unknown(&format!("its \"config\" is not JSON: {error}")))?;
    match config.get("sandboxImage").and_then(|v| v.as_str()) {
        Some(name) if !name.trim().is_empty() => Ok(name.trim().to_owned()),
        _ => Err(unknown("no \"sandboxImage\" in its config")),
    }
}

/// The full name containerd stores an image reference under, as its
/// reference parser normalises it: `pause:3.9` is
/// `docker.io/library/pause:3.9`, a missing tag is `latest`. Digest
/// references are refused: a locally built image cannot have that digest.
pub fn normalize_reference(name: &str) -> Result<String, SandboxImageError> {
    let unusable = |reason: &str| SandboxImageError::UnusableName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.contains('@') {
        return Err(unusable("it is pinned to a digest"));
    }
    let qualified = match name.split_once('/') {
        None => format!("docker.io/library/{name}"),
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            name.to_owned()
        }
        Some(_) => format!("docker.io/{name}"),
    };
    let last = qualified.rsplit('/').next().unwrap_or(&qualified);
    let tagged = if last.contains(':') {
        qualified
    } else {
        format!("{qualified}:latest")
    };
    oci::split_name(&tagged).map_err(|error| unusable(&error.to_string()))?;
    Ok(tagged)
}

/// What the runtime is asked, behind a trait so that tests use a fake.
pub trait SandboxImageRuntime: Send + Sync + 'static {
    /// The verbose `info` map of CRI `Status`.
    fn status_info(
        &self,
    ) -> impl Future<Output = Result<HashMap<String, String>, SandboxImageError>> + Send;
    /// Whether `ImageStatus` finds the image.
    fn image_present(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<bool, SandboxImageError>> + Send;
}

/// CRI over the runtime's unix socket (a lazy channel of its own, which
/// reconnects by itself).
#[derive(Clone)]
pub struct CriSandboxImageRuntime {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl CriSandboxImageRuntime {
    pub fn new(socket: &Path) -> CriSandboxImageRuntime {
        let path = socket.to_owned();
        // The URI is required by the API but unused: the connector decides
        // where the bytes go.
        let channel = Endpoint::from_static("http://cri.invalid")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }));
        CriSandboxImageRuntime {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        }
    }
}

fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

impl SandboxImageRuntime for CriSandboxImageRuntime {
    async fn status_info(&self) -> Result<HashMap<String, String>, SandboxImageError> {
        let answer = self
            .runtime
            .clone()
            .status(request(cri::StatusRequest { verbose: true }))
            .await
            .map_err(|s| SandboxImageError::from_status("Status", s))?;
        Ok(answer.into_inner().info)
    }

    async fn image_present(&self, name: &str) -> Result<bool, SandboxImageError> {
        let answer = self
            .images
            .clone()
            .image_status(request(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: name.to_owned(),
                    ..Default::default()
                }),
                verbose: false,
            }))
            .await
            .map_err(|s| SandboxImageError::from_status("ImageStatus", s))?;
        Ok(answer.into_inner().image.is_some())
    }
}

/// What a round of [`ensure_sandbox_image`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxImageOutcome {
    /// The runtime has the image already.
    Present { name: String },
    /// The embedded pause image was imported under the name.
    Imported { name: String },
}

/// One round: find the sandbox image's name, and import the embedded pause
/// image under it if the runtime lacks it. `scratch_dir` holds the tarball
/// during the import.
pub async fn ensure_sandbox_image<R: SandboxImageRuntime, I: ImageImporter>(
    runtime: &R,
    importer: &I,
    scratch_dir: &Path,
) -> Result<SandboxImageOutcome, SandboxImageError> {
    let configured = sandbox_image_name(&runtime.status_info().await?)?;
    if runtime.image_present(&configured).await? {
        return Ok(SandboxImageOutcome::Present { name: configured });
    }
    let name = normalize_reference(&configured)?;
    let tarball = image(&name)?;
    let path = scratch_dir.join(".sandbox-image.tar");
    let write_error = |source| SandboxImageError::Write {
        path: path.clone(),
        source,
    };
    tokio::fs::create_dir_all(scratch_dir)
        .await
        .map_err(write_error)?;
    tokio::fs::write(&path, &tarball.tarball)
        .await
        .map_err(write_error)?;
    let imported = importer.import(&path).await;
    // The tarball is only needed for the import; a leftover is rewritten
    // next time, so a failed removal does not matter.
    let _ = tokio::fs::remove_file(&path).await;
    imported?;
    Ok(SandboxImageOutcome::Imported { name })
}

/// Keeps the runtime's sandbox image present for the agent's lifetime (see
/// the module documentation). An import is logged each time; otherwise a
/// line is logged only when the result changes, not on every round.
pub async fn keep_sandbox_image<R: SandboxImageRuntime, I: ImageImporter>(
    runtime: R,
    importer: I,
    scratch_dir: PathBuf,
) {
    let mut last_state = String::new();
    loop {
        let result = ensure_sandbox_image(&runtime, &importer, &scratch_dir).await;
        let delay = match &result {
            Err(error) if error.is_unavailable() => RETRY_INTERVAL,
            _ => CHECK_INTERVAL,
        };
        let state = match &result {
            Ok(SandboxImageOutcome::Present { name } | SandboxImageOutcome::Imported { name }) => {
                format!("present {name}")
            }
            Err(error) => error.to_string(),
        };
        match result {
            Ok(SandboxImageOutcome::Imported { name }) => {
                tracing::info!(image = %name, "imported the agent's pause image as the runtime's sandbox image")
            }
            _ if state == last_state => {}
            Ok(SandboxImageOutcome::Present { name }) => {
                tracing::info!(image = %name, "the runtime's sandbox image is present")
            }
            Err(error) if error.is_unavailable() => {
                tracing::debug!(%error, "cannot check the sandbox image yet")
            }
            Err(error) => tracing::warn!(%error, "cannot provide the sandbox image"),
        }
        last_state = state;
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::io::Read;
    use std::sync::Mutex;

    /// A runtime with a config and a set of images.
    struct FakeRuntime {
        info: HashMap<String, String>,
        images: Mutex<BTreeSet<String>>,
    }

    impl FakeRuntime {
        fn with_sandbox_image(name: &str) -> FakeRuntime {
            let config = serde_json::json!({"sandboxImage": name, "cni": {}});
            FakeRuntime {
                info: [("config".to_owned(), config.to_string())].into(),
                images: Mutex::default(),
            }
        }
    }

    impl SandboxImageRuntime for FakeRuntime {
        async fn status_info(&self) -> Result<HashMap<String, String>, SandboxImageError> {
            Ok(self.info.clone())
        }
        async fn image_present(&self, name: &str) -> Result<bool, SandboxImageError> {
            Ok(self.images.lock().expect("lock").contains(name))
        }
    }

    /// An importer that reads the tarball's image name and records it.
    #[derive(Default)]
    struct RecordingImporter {
        imported: Mutex<Vec<String>>,
    }

    impl ImageImporter for RecordingImporter {
        async fn import(&self, path: &Path) -> Result<(), ImageImportError> {
            let data = std::fs::read(path).expect("the tarball exists during the import");
            let mut archive = tar::Archive::new(data.as_slice());
            let mut index = String::new();
            for entry in archive.entries().expect("entries") {
                let mut entry = entry.expect("entry");
                if entry.path().expect("path").as_os_str() == "index.json" {
                    entry.read_to_string(&mut index).expect("index");
                }
            }
            let index: serde_json::Value = serde_json::from_str(&index).expect("index json");
            let name = index["manifests"][0]["annotations"]["io.containerd.image.name"]
                .as_str()
                .expect("a name")
                .to_owned();
            self.imported.lock().expect("lock").push(name);
            Ok(())
        }
    }

    #[test]
    fn the_embedded_binary_is_a_static_executable() {
        assert_eq!(&PAUSE_BINARY[..4], b"\x7fELF");
        assert!(PAUSE_BINARY.len() > 10_000, "{} bytes", PAUSE_BINARY.len());
    }

    #[tokio::test]
    async fn a_missing_sandbox_image_is_imported_under_its_exact_name() {
        let runtime = FakeRuntime::with_sandbox_image("registry.k8s.io/pause:3.6");
        let importer = RecordingImporter::default();
        let scratch = tempfile::tempdir().expect("tempdir");
        let outcome = ensure_sandbox_image(&runtime, &importer, scratch.path())
            .await
            .expect("ensured");
        assert_eq!(
            outcome,
            SandboxImageOutcome::Imported {
                name: "registry.k8s.io/pause:3.6".into()
            }
        );
        assert_eq!(
            *importer.imported.lock().expect("lock"),
            ["registry.k8s.io/pause:3.6"]
        );
        assert!(
            std::fs::read_dir(scratch.path())
                .expect("dir")
                .next()
                .is_none(),
            "the scratch tarball is removed"
        );
    }

    #[tokio::test]
    async fn a_present_sandbox_image_is_left_alone() {
        let runtime = FakeRuntime::with_sandbox_image("skiff.local/pause:3.9");
        runtime
            .images
            .lock()
            .expect("lock")
            .insert("skiff.local/pause:3.9".into());
        let importer = RecordingImporter::default();
        let scratch = tempfile::tempdir().expect("tempdir");
        let outcome = ensure_sandbox_image(&runtime, &importer, scratch.path())
            .await
            .expect("ensured");
        assert!(matches!(outcome, SandboxImageOutcome::Present { .. }));
        assert!(importer.imported.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn an_unknown_name_says_what_to_configure() {
        let runtime = FakeRuntime {
            info: HashMap::new(),
            images: Mutex::default(),
        };
        let importer = RecordingImporter::default();
        let scratch = tempfile::tempdir().expect("tempdir");
        let error = ensure_sandbox_image(&runtime, &importer, scratch.path())
            .await
            .expect_err("no name");
        assert!(error.to_string().contains("sandbox_image ="), "{error}");
        assert!(importer.imported.lock().expect("lock").is_empty());
    }

    #[test]
    fn the_name_comes_from_the_verbose_config() {
        let info = |config: &str| -> HashMap<String, String> {
            [("config".to_owned(), config.to_owned())].into()
        };
        assert_eq!(
            sandbox_image_name(&info(r#"{"sandboxImage":"skiff.local/pause:3.9"}"#))
                .expect("named"),
            "skiff.local/pause:3.9"
        );
        for bad in [r#"{"sandboxImage":""}"#, "{}", "not json"] {
            assert!(
                matches!(
                    sandbox_image_name(&info(bad)),
                    Err(SandboxImageError::NameUnknown { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn references_are_normalised_as_containerd_does() {
        for (given, full) in [
            ("pause:3.9", "docker.io/library/pause:3.9"),
            ("pause", "docker.io/library/pause:latest"),
            ("k8s/pause:1", "docker.io/k8s/pause:1"),
            ("registry.k8s.io/pause:3.6", "registry.k8s.io/pause:3.6"),
            ("localhost/pause", "localhost/pause:latest"),
            ("reg.example:5000/pause", "reg.example:5000/pause:latest"),
        ] {
            assert_eq!(normalize_reference(given).expect(given), full);
        }
        assert!(normalize_reference("registry.k8s.io/pause@sha256:abc").is_err());
        assert!(normalize_reference("Registry/Pause:1").is_err());
    }
}
