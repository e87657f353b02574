//! Startup, liveness and readiness probes.
//!
//! [`probe_specs`] reads a container's probes; [`ProbeCounter`] is the pure
//! part, kubelet's thresholds: a readiness result starts as failure and a
//! liveness result as success, and a result flips only after
//! `successThreshold` consecutive successes or `failureThreshold`
//! consecutive failures. [`run_probe`] performs one check: `httpGet` (a
//! status from 200 to 399), `tcpSocket` (a connection) or `exec` (exit code
//! 0, through CRI ExecSync), each bounded by `timeoutSeconds`.
//!
//! The worker runs one task per running container and probe kind (only the
//! startup probe until it has succeeded), and acts on flips only: startup
//! sets the container's `started`, readiness its `ready`, and a failed
//! liveness or startup probe has the planner stop the container, which then
//! restarts under its restart policy and backoff.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cri::Cri;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    /// Holds the other two back until it succeeds once; its failure
    /// restarts the container, as a liveness failure does.
    Startup,
    Liveness,
    Readiness,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    Http {
        https: bool,
        host: Option<String>,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: Option<String>,
        port: u16,
    },
    Exec {
        command: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    pub action: ProbeAction,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

fn seconds(value: Option<i32>, default: i32, minimum: i32) -> Duration {
    Duration::from_secs(value.unwrap_or(default).max(minimum) as u64)
}

fn port(container: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(number) => {
            u16::try_from(*number).map_err(|_| format!("port {number} is out of range"))
        }
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("the container has no port named {name:?}")),
    }
}

fn spec(kind: ProbeKind, probe: &Probe, container: &Container) -> Result<ProbeSpec, String> {
    let action = if let Some(http) = &probe.http_get {
        ProbeAction::Http {
            https: http.scheme.as_deref() == Some("HTTPS"),
            host: http.host.clone().filter(|h| !h.is_empty()),
            port: port(container, &http.port)?,
            path: http
                .path
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".into()),
            headers: http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        }
    } else if let Some(tcp) = &probe.tcp_socket {
        ProbeAction::Tcp {
            host: tcp.host.clone().filter(|h| !h.is_empty()),
            port: port(container, &tcp.port)?,
        }
    } else if let Some(exec) = &probe.exec {
        ProbeAction::Exec {
            command: exec.command.clone().unwrap_or_default(),
        }
    } else {
        return Err(
            "the probe has no httpGet, tcpSocket or exec handler this node supports".into(),
        );
    };
    Ok(ProbeSpec {
        kind,
        action,
        initial_delay: seconds(probe.initial_delay_seconds, 0, 0),
        period: seconds(probe.period_seconds, 10, 1),
        timeout: seconds(probe.timeout_seconds, 1, 1),
        // Liveness needs exactly one success, as the API enforces.
        success_threshold: match kind {
            ProbeKind::Liveness | ProbeKind::Startup => 1,
            ProbeKind::Readiness => probe.success_threshold.unwrap_or(1).max(1) as u32,
        },
        failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
    })
}

/// A container's probes; the errors are probes that cannot run here.
pub fn probe_specs(container: &Container) -> (Vec<ProbeSpec>, Vec<String>) {
    let mut specs = Vec::new();
    let mut errors = Vec::new();
    for (kind, probe) in [
        (ProbeKind::Startup, &container.startup_probe),
        (ProbeKind::Liveness, &container.liveness_probe),
        (ProbeKind::Readiness, &container.readiness_probe),
    ] {
        if let Some(probe) = probe {
            match spec(kind, probe, container) {
                Ok(spec) => specs.push(spec),
                Err(error) => errors.push(format!("{kind:?} probe: {error}")),
            }
        }
    }
    (specs, errors)
}

/// Consecutive results against the thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeCounter {
    pub healthy: bool,
    streak: u32,
    streak_ok: bool,
}

impl ProbeCounter {
    pub fn new(kind: ProbeKind) -> ProbeCounter {
        let healthy = kind == ProbeKind::Liveness;
        ProbeCounter {
            healthy,
            streak: 0,
            streak_ok: healthy,
        }
    }

    /// Records one check; returns the new result when it flips.
    pub fn record(&mut self, ok: bool, spec: &ProbeSpec) -> Option<bool> {
        if ok == self.streak_ok {
            self.streak = self.streak.saturating_add(1);
        } else {
            self.streak_ok = ok;
            self.streak = 1;
        }
        let threshold = if ok {
            spec.success_threshold
        } else {
            spec.failure_threshold
        };
        if ok != self.healthy && self.streak >= threshold {
            self.healthy = ok;
            return Some(ok);
        }
        None
    }
}

/// Whether an HTTP status line reports success (200–399).
pub fn http_status_ok(response: &[u8]) -> bool {
    let line = response.split(|b| *b == b'\n').next().unwrap_or_default();
    let code = std::str::from_utf8(line)
        .ok()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok());
    code.is_some_and(|c| (200..400).contains(&c))
}

async fn http_check(
    ip: IpAddr,
    host: Option<&str>,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<bool, String> {
    let target = match host.and_then(|h| h.parse::<IpAddr>().ok()) {
        Some(host_ip) => (host_ip, port),
        None => (ip, port),
    };
    let mut stream = tokio::net::TcpStream::connect(target)
        .await
        .map_err(|e| e.to_string())?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n",
        host.unwrap_or(&target.0.to_string())
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = vec![0u8; 256];
    let read = stream.read(&mut head).await.map_err(|e| e.to_string())?;
    Ok(http_status_ok(&head[..read]))
}

/// Performs one check against a container whose pod has `ip`; a failure
/// says why, for the `Unhealthy` event.
pub async fn run_probe<C: Cri>(
    cri: &C,
    spec: &ProbeSpec,
    container_id: &str,
    ip: Option<IpAddr>,
) -> Result<(), String> {
    let check = async {
        match &spec.action {
            ProbeAction::Http { https: true, .. } => {
                Err("HTTPS probes are not supported on this node yet".to_owned())
            }
            ProbeAction::Http {
                host,
                port,
                path,
                headers,
                ..
            } => {
                let ip = ip.ok_or("the pod has no IP yet")?;
                http_check(ip, host.as_deref(), *port, path, headers).await
            }
            ProbeAction::Tcp { host, port } => {
                let ip = host
                    .as_deref()
                    .and_then(|h| h.parse().ok())
                    .or(ip)
                    .ok_or("the pod has no IP yet")?;
                tokio::net::TcpStream::connect((ip, *port))
                    .await
                    .map(|_| true)
                    .map_err(|e| e.to_string())
            }
            ProbeAction::Exec { command } => cri
                .exec_sync(container_id, command, spec.timeout)
                .await
                .map(|code| code == 0)
                .map_err(|e| e.to_string()),
        }
    };
    let failure = match tokio::time::timeout(spec.timeout, check).await {
        Ok(Ok(true)) => return Ok(()),
        Ok(Ok(false)) => match &spec.action {
            ProbeAction::Http { path, .. } => {
                format!("HTTP probe failed: GET {path} answered with a status outside 200-399")
            }
            ProbeAction::Tcp { port, .. } => format!("cannot connect to port {port}"),
            ProbeAction::Exec { command } => {
                format!("command {command:?} exited with a non-zero code")
            }
        },
        Ok(Err(error)) => error,
        Err(_) => format!("timeout: no answer within {}s", spec.timeout.as_secs_f64()),
    };
    tracing::debug!(container = %container_id, kind = ?spec.kind, error = %failure, "probe failed");
    Err(failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(value: serde_json::Value) -> Container {
        serde_json::from_value(value).expect("container")
    }

    #[test]
    fn probes_are_read_with_kubernetes_defaults_and_named_ports() {
        let c = container(json!({
            "name": "web", "image": "img",
            "ports": [{"name": "http", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 2},
            "readinessProbe": {"tcpSocket": {"port": 81}, "successThreshold": 2},
        }));
        let (specs, errors) = probe_specs(&c);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(specs[0].kind, ProbeKind::Liveness);
        assert_eq!(
            specs[0].action,
            ProbeAction::Http {
                https: false,
                host: None,
                port: 8080,
                path: "/healthz".into(),
                headers: vec![]
            }
        );
        assert_eq!(specs[0].period, Duration::from_secs(2));
        assert_eq!(specs[0].timeout, Duration::from_secs(1));
        assert_eq!(specs[0].failure_threshold, 3);
        assert_eq!(
            specs[1].action,
            ProbeAction::Tcp {
                host: None,
                port: 81
            }
        );
        assert_eq!(specs[1].success_threshold, 2);

        let bad = container(json!({"name": "web", "image": "img",
            "livenessProbe": {"httpGet": {"port": "missing"}}}));
        let (specs, errors) = probe_specs(&bad);
        assert!(specs.is_empty());
        assert!(errors[0].contains("no port named"), "{errors:?}");
    }

    #[test]
    fn startup_probes_come_first_and_start_as_failures() {
        let c = container(json!({"name": "web", "image": "img",
            "startupProbe": {"tcpSocket": {"port": 80}, "failureThreshold": 30},
            "livenessProbe": {"tcpSocket": {"port": 80}}}));
        let (specs, _) = probe_specs(&c);
        assert_eq!(specs[0].kind, ProbeKind::Startup);
        assert_eq!(specs[0].failure_threshold, 30);
        assert!(!ProbeCounter::new(ProbeKind::Startup).healthy);
    }

    #[test]
    fn results_flip_only_at_the_thresholds() {
        let c = container(json!({"name": "web", "image": "img",
            "livenessProbe": {"exec": {"command": ["true"]}, "failureThreshold": 2},
            "readinessProbe": {"exec": {"command": ["true"]}, "successThreshold": 2}}));
        let (specs, _) = probe_specs(&c);
        let mut live = ProbeCounter::new(ProbeKind::Liveness);
        assert!(live.healthy);
        assert_eq!(live.record(false, &specs[0]), None);
        assert_eq!(live.record(true, &specs[0]), None, "the streak is broken");
        assert_eq!(live.record(false, &specs[0]), None);
        assert_eq!(live.record(false, &specs[0]), Some(false));
        assert_eq!(live.record(false, &specs[0]), None, "reported once");

        let mut ready = ProbeCounter::new(ProbeKind::Readiness);
        assert!(!ready.healthy);
        assert_eq!(ready.record(true, &specs[1]), None);
        assert_eq!(ready.record(true, &specs[1]), Some(true));
        assert_eq!(ready.record(false, &specs[1]), None);
        assert_eq!(ready.record(false, &specs[1]), None);
        assert_eq!(ready.record(false, &specs[1]), Some(false));
    }

    #[test]
    fn http_statuses_from_200_to_399_succeed() {
        assert!(http_status_ok(b"HTTP/1.1 200 OK\r\n"));
        assert!(http_status_ok(b"HTTP/1.0 302 Found\r\nLocation: /x\r\n"));
        assert!(!http_status_ok(b"HTTP/1.1 404 Not Found\r\n"));
        assert!(!http_status_ok(b"garbage"));
    }
}
