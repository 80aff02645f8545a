//! No private key or secret outside the hosts that need it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::cluster::*;
use crate::harness::Run;
use crate::secrets::files_matching;

/// How many characters of a key or secret [`Needles`] look for.
const NEEDLE: usize = 24;

/// Stretches of private keys and secrets to look for, each [`NEEDLE`]
/// base64 characters long, found in one pass over what is searched (a
/// search per needle through megabytes of trace output is too slow for a
/// test binary built without optimisation).
struct Needles(HashSet<Vec<u8>>);

impl Needles {
    /// The distinctive parts of every private key and secret among `host`'s
    /// cluster files: the end of each line of a key's PEM body, a stretch
    /// of the PEM in base64 (as a kubeconfig embeds it), the encryption key.
    ///
    /// A private key's PEM holds its public key too (PKCS#8 carries it for
    /// EC keys), and the certificates hold that in the open: a stretch that
    /// also appears in a certificate or public key (as is, or base64 again
    /// as a kubeconfig embeds it) is public and is not looked for.
    fn add_host(&mut self, cluster: &Cluster, host: &str) {
        use base64::Engine as _;
        let files = cluster.files(host);
        let mut public = HashSet::new();
        for (name, bytes) in &files {
            if name.ends_with(".pem") && !name.ends_with("-key.pem") {
                let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
                for text in [bytes.as_slice(), encoded.as_bytes()] {
                    public.extend(text.windows(NEEDLE).map(<[u8]>::to_vec));
                }
            }
        }
        let before = self.0.clone();
        for (name, bytes) in files {
            let text = String::from_utf8(bytes).unwrap();
            if name.ends_with("-key.pem") {
                // The end of each line: their starts are the same DER
                // header in every key.
                for line in text.lines().filter(|l| !l.starts_with("-----")) {
                    if line.len() >= NEEDLE {
                        self.0
                            .insert(line.as_bytes()[line.len() - NEEDLE..].to_vec());
                    }
                }
                let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
                let middle = encoded.len() / 2;
                self.0
                    .insert(encoded.as_bytes()[middle..middle + NEEDLE].to_vec());
            }
            if name == "encryption-config.json" {
                let config: serde_json::Value = serde_json::from_str(&text).unwrap();
                let key = &config["resources"][0]["providers"][0]["aescbc"]["keys"][0]["secret"];
                self.0
                    .insert(key.as_str().unwrap().as_bytes()[..NEEDLE].to_vec());
            }
        }
        self.0
            .retain(|needle| before.contains(needle) || !public.contains(needle));
    }

    /// Whether `haystack` holds one of them: every window of every run of
    /// base64 characters long enough is looked up.
    fn found_in(&self, haystack: &[u8]) -> bool {
        let base64 = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
        haystack
            .split(|b| !base64(b))
            .filter(|run| run.len() >= NEEDLE)
            .any(|run| run.windows(NEEDLE).any(|w| self.0.contains(w)))
    }
}

#[test]
fn no_private_key_or_secret_in_state_plans_logs_or_temp_files() {
    let started = std::time::SystemTime::now();
    let cluster = Cluster::new(150, |spec| spec);
    let trace = [("PROV_LOG", "trace")];
    let mut seen = Vec::new();
    let record = |seen: &mut Vec<u8>, run: &Run| {
        seen.extend_from_slice(run.stdout.as_bytes());
        seen.extend_from_slice(run.stderr.as_bytes());
    };
    record(&mut seen, &cluster.ok(&["apply", "--auto-approve"], &trace));
    // The keys as the first apply delivered them (the renewal below
    // replaces every leaf's: both generations are looked for).
    let mut needles = Needles(HashSet::new());
    for host in ["cp", "w1", "w2"] {
        needles.add_host(&cluster, host);
    }
    record(&mut seen, &cluster.ok(&["plan"], &trace));
    record(&mut seen, &cluster.ok(&["state", "pull"], &[]));
    // Every leaf due for renewal: plans that upload every file again.
    let later = days_from_now(340);
    let renew = [("PROV_LOG", "trace"), ("PROV_NOW", later.as_str())];
    let json = cluster.ok(&["plan", "--json"], &renew);
    assert!(json.stdout.contains("within renew_before"), "{json}");
    record(&mut seen, &json);
    record(&mut seen, &cluster.ok(&["plan"], &renew));
    record(
        &mut seen,
        &cluster.ok(&["plan", "--out", "renew.plan"], &renew),
    );
    seen.extend(std::fs::read(cluster.ws.path().join("renew.plan")).unwrap());
    let applied = cluster.ok(&["apply", "renew.plan"], &renew);
    assert!(applied.stdout.contains("uploaded secret"), "{applied}");
    record(&mut seen, &applied);
    record(&mut seen, &cluster.ok(&["state", "pull"], &[]));
    cluster.assert_converged(&[("PROV_NOW", later.as_str())]);

    let first = needles.0.len();
    for host in ["cp", "w1", "w2"] {
        needles.add_host(&cluster, host);
    }
    assert!(needles.0.len() > first, "the renewal made new keys");
    // 42 keys (21 per generation), each with private stretches of its own.
    assert!(needles.0.len() > 100, "{} needles", needles.0.len());
    // The search finds what it looks for: every key on the hosts.
    for host in ["cp", "w1", "w2"] {
        for (name, bytes) in cluster.files(host) {
            if name.ends_with("-key.pem") {
                assert!(
                    needles.found_in(&bytes),
                    "{host}'s {name} is not looked for"
                );
            }
        }
    }
    assert!(
        !needles.found_in(&seen),
        "a private key or secret leaked into prov's output, state or plan"
    );
    // Nor in any file written since the test started, but the hosts' own
    // cluster files (where they belong) and etcd's data (large, and it holds
    // no key).
    let skip = |path: &Path| {
        let path = path.to_string_lossy();
        path.ends_with("/lib/kubernetes/secrets") || path.ends_with("/lib/etcd")
    };
    let mut hits = Vec::new();
    let mut dirs = vec![PathBuf::from("/tmp"), PathBuf::from("/dev/shm")];
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
        dirs.push(PathBuf::from(runtime));
    }
    dirs.push(cluster.ws.path().to_owned());
    for dir in dirs {
        files_matching(
            &dir,
            started,
            &|bytes| needles.found_in(bytes),
            &skip,
            &mut hits,
        );
    }
    hits.sort();
    hits.dedup();
    assert!(hits.is_empty(), "private keys or secrets found in {hits:?}");
}
