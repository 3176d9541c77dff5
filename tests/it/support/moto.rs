//! The moto AWS emulator (`moto_server`, installed by scripts/test.sh) on
//! a free loopback port, and the fake credentials that go with it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Static fake credentials, and nothing from the host's AWS setup.
pub const FAKE_AWS_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_SESSION_TOKEN", "testing"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_CONFIG_FILE", "/nonexistent/aws-config"),
    (
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/aws-credentials",
    ),
    ("AWS_PROFILE", ""),
    ("AWS_ROLE_ARN", ""),
    ("AWS_WEB_IDENTITY_TOKEN_FILE", ""),
];

/// `moto_server` from `TRACEMAP_TEST_MOTO_SERVER`; a loud skip without
/// it, a failure under CI.
pub fn moto_server_path(what: &str) -> Option<PathBuf> {
    match std::env::var_os("TRACEMAP_TEST_MOTO_SERVER") {
        Some(path) => Some(PathBuf::from(path)),
        None if std::env::var_os("CI").is_some() => {
            panic!("TRACEMAP_TEST_MOTO_SERVER is not set under CI; run scripts/test.sh")
        }
        None => {
            eprintln!(
                "SKIPPED: TRACEMAP_TEST_MOTO_SERVER is not set, so {what} against the moto AWS \
                 emulator did not run; scripts/test.sh installs it"
            );
            None
        }
    }
}

/// SDK settings for any AWS client of the test: moto's endpoint, a fixed
/// region and the fake credentials.
pub fn client_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new("testing", "testing", None, None, "test"),
            ),
        )
        .build()
}

/// A running `moto_server`; killed on drop.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Moto {
    /// Starts it and waits (at most 30 s) until it listens.
    pub fn start(path: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(path)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", path.display()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "moto_server exited during startup"
            );
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
