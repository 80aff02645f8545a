//! The moto server shared by every test in this binary, and helpers to set
//! up buckets and backends on it and to act behind the backend's back.

use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use prov_state::{LockInfo, S3Backend, S3Settings, StateBackend};

use crate::suite;

/// The moto server shared by every test in this binary.
pub(crate) struct SharedMoto {
    /// `http://127.0.0.1:PORT`.
    pub(crate) endpoint: String,
    /// The wrapper shell; it stops moto when this pipe closes (the test
    /// binary exited).
    pub(crate) _child: Child,
    pub(crate) _stdin: ChildStdin,
}

/// A free TCP port on 127.0.0.1.
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Starts a moto server with `extra` arguments (at most 30 s); it stops
/// when the returned value is dropped.
pub(crate) fn spawn_moto(extra: &str) -> SharedMoto {
    let port = free_port();
    let program = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
    // The shell runs moto in the background and kills it when its
    // stdin (a pipe from this process) reaches end of file.
    let mut child = Command::new("sh")
        .args([
            "-c",
            r#""$0" -H 127.0.0.1 -p "$1" $2 >/dev/null 2>&1 & m=$!; cat >/dev/null; kill $m"#,
            &program,
            &port.to_string(),
            extra,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program} (run scripts/setup.sh): {e}"));
    let stdin = child.stdin.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{program} did not start within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    SharedMoto {
        endpoint: format!("http://127.0.0.1:{port}"),
        _child: child,
        _stdin: stdin,
    }
}

/// The shared moto endpoint, starting moto on first use.
pub(crate) fn moto() -> &'static str {
    static MOTO: OnceLock<SharedMoto> = OnceLock::new();
    &MOTO.get_or_init(|| spawn_moto("")).endpoint
}

/// AWS configuration for moto: static credentials, us-east-1.
pub(crate) async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .endpoint_url(moto())
        .load()
        .await
}

/// A raw client on moto, to act behind the backend's back.
pub(crate) async fn raw_client() -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(&sdk_config().await)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Creates a new, empty bucket and returns its name.
pub(crate) async fn new_bucket(client: &aws_sdk_s3::Client) -> String {
    let bucket = format!("prov-test-{}", uuid::Uuid::new_v4().simple());
    client.create_bucket().bucket(&bucket).send().await.unwrap();
    bucket
}

/// Settings for `bucket` on moto.
pub(crate) fn settings(bucket: &str) -> S3Settings {
    let mut settings = S3Settings::new(bucket, "demo/state.json");
    settings.endpoint = Some(moto().to_owned());
    settings.region = Some("us-east-1".to_owned());
    settings
}

/// A backend on `settings`.
pub(crate) async fn backend(settings: S3Settings) -> S3Backend {
    S3Backend::from_sdk_config(settings, &sdk_config().await).unwrap()
}

/// An S3 backend on a new bucket.
pub(crate) async fn fresh() -> suite::Fixture {
    let client = raw_client().await;
    let bucket = new_bucket(&client).await;
    suite::Fixture {
        backend: Box::new(backend(settings(&bucket)).await),
        _keep: Box::new(bucket),
    }
}

/// A backend on a new bucket, and a raw client on the same moto.
pub(crate) async fn rig() -> (S3Backend, aws_sdk_s3::Client) {
    let client = raw_client().await;
    let bucket = new_bucket(&client).await;
    (backend(settings(&bucket)).await, client)
}

/// Reads an object with the raw client (`None` when missing).
pub(crate) async fn raw_get(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Option<Vec<u8>> {
    match client.get_object().bucket(bucket).key(key).send().await {
        Ok(resp) => Some(resp.body.collect().await.unwrap().into_bytes().to_vec()),
        Err(e) => {
            let text = format!("{e:?}");
            assert!(text.contains("NoSuchKey"), "{text}");
            None
        }
    }
}

/// Writes an object with the raw client, unconditionally.
pub(crate) async fn raw_put(client: &aws_sdk_s3::Client, bucket: &str, key: &str, body: Vec<u8>) {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap();
}

/// Takes the lock without waiting.
pub(crate) async fn lock(b: &S3Backend, operation: &str) -> Box<dyn prov_state::StateLock> {
    b.lock(LockInfo::for_this_process(operation), Duration::ZERO)
        .await
        .unwrap()
}

/// Bytes of every object in `bucket`.
pub(crate) async fn bucket_bytes(client: &aws_sdk_s3::Client, bucket: &str) -> u64 {
    let mut total = 0;
    let mut token = None;
    for _ in 0..1000 {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        total += page
            .contents()
            .iter()
            .map(|o| o.size().unwrap_or(0) as u64)
            .sum::<u64>();
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            return total;
        }
    }
    panic!("more than 1000 pages");
}
