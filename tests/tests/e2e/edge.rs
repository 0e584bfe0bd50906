//! Edge operations end to end: TLS termination (SNI, TLS 1.2 and 1.3, HTTP/2, client
//! certificates), upstream TLS with a private CA and mutual TLS, config reload under load
//! and across open streams, the zero-downtime upgrade with open streams, and the
//! deployment files (`deploy/check.py`). Certificates are made by the tests (rcgen).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tollgate_tests::{
    bin_dir, chat_body, client, eventually, free_port, get_json, key_hash, sse_data, stream_text,
    Gateway, Mock, Proc, TempDir, TEST_KEY,
};

// === certificates ===

/// A CA made for one test, issuing leaf certificates into `dir`.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    name: String,
}

/// A leaf certificate's files and DER.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    der: Vec<u8>,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join(format!("{name}-ca.pem")), issuer.pem()).unwrap();
        Ca {
            issuer,
            dir: dir.to_owned(),
            name: name.to_owned(),
        }
    }

    fn pem_path(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    fn leaf(&self, file: &str, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let leaf = Leaf {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
            der: cert.der().to_vec(),
        };
        std::fs::write(&leaf.cert, cert.pem()).unwrap();
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        leaf
    }
}

fn identity(leaf: &Leaf) -> reqwest::Identity {
    let mut pem = std::fs::read(&leaf.cert).unwrap();
    pem.extend(std::fs::read(&leaf.key).unwrap());
    reqwest::Identity::from_pem(&pem).unwrap()
}

fn ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The DER of the certificate the server presented.
fn served_cert(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .unwrap()
        .to_vec()
}

// === TLS termination ===

#[tokio::test]
async fn tls_listener_picks_certificates_by_sni_speaks_tls12_tls13_h2_and_requires_client_certificates(
) {
    let mock = Mock::start(&[]);
    let files = TempDir::new();
    let servers = Ca::new(&files.0, "servers");
    let clients = Ca::new(&files.0, "clients");
    let strangers = Ca::new(&files.0, "strangers");
    let default = servers.leaf("default", &["default.test"]);
    let api = servers.leaf("api", &["api.test"]);
    let wild = servers.leaf("wild", &["*.internal.test"]);
    let client_leaf = clients.leaf("client", &["client.test"]);
    let stranger = strangers.leaf("stranger", &["client.test"]);
    let tls_port = free_port();
    let server_extra = format!(
        "  tls:\n    listen: [\"127.0.0.1:{tls_port}\"]\n    cert: {}\n    key: {}\n    sni:\n      - {{ names: [api.test], cert: {}, key: {} }}\n      - {{ names: [\"*.internal.test\"], cert: {}, key: {} }}\n    client_ca: {}\n",
        default.cert.display(),
        default.key.display(),
        api.cert.display(),
        api.key.display(),
        wild.cert.display(),
        wild.key.display(),
        clients.pem_path().display(),
    );
    let gw = Gateway::start_with_server(&one_mock_config(&mock), &server_extra).await;
    let addr: SocketAddr = ([127, 0, 0, 1], tls_port).into();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(servers.pem_path()).unwrap()).unwrap();
    let tls_client_builder = |id: Option<reqwest::Identity>| {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca.clone())
            .tls_info(true)
            .timeout(Duration::from_secs(30))
            .resolve("api.test", addr)
            .resolve("a.internal.test", addr)
            .resolve("default.test", addr)
            .resolve("other.test", addr);
        if let Some(id) = id {
            builder = builder.identity(id);
        }
        builder
    };
    let tls_client = |id: Option<reqwest::Identity>| tls_client_builder(id).build().unwrap();

    let trusted = tls_client(Some(identity(&client_leaf)));
    for (host, want) in [
        ("api.test", &api.der),
        ("a.internal.test", &wild.der),
        ("default.test", &default.der),
    ] {
        let resp = trusted
            .post(format!("https://{host}:{tls_port}/v1/chat/completions"))
            .bearer_auth(TEST_KEY)
            .json(&chat_body("model-a"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{host}");
        assert_eq!(resp.version(), reqwest::Version::HTTP_2, "{host}: ALPN h2");
        assert_eq!(
            &served_cert(&resp),
            want,
            "{host}: certificate chosen by SNI"
        );
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(body["choices"][0]["message"]["content"].is_string());
    }
    // Clients that speak only TLS 1.2, or only TLS 1.3, both complete the handshake (with
    // the client certificate) and get HTTP/2.
    for version in [
        reqwest::tls::Version::TLS_1_2,
        reqwest::tls::Version::TLS_1_3,
    ] {
        let capped = tls_client_builder(Some(identity(&client_leaf)))
            .min_tls_version(version)
            .max_tls_version(version)
            .build()
            .unwrap();
        let resp = capped
            .post(format!("https://api.test:{tls_port}/v1/chat/completions"))
            .bearer_auth(TEST_KEY)
            .json(&chat_body("model-a"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{version:?}: {e:?}"));
        assert_eq!(resp.status(), 200, "{version:?}");
        assert_eq!(resp.version(), reqwest::Version::HTTP_2, "{version:?}");
        assert_eq!(&served_cert(&resp), &api.der, "{version:?}");
    }

    // A name no certificate covers gets the default one, which the client rejects: the
    // host name does not match.
    let result = trusted
        .get(format!("https://other.test:{tls_port}/v1/models"))
        .send()
        .await;
    assert!(result.is_err(), "{result:?}");

    // Without a client certificate, or with one from another CA, no request gets through.
    for (who, id) in [("none", None), ("stranger", Some(identity(&stranger)))] {
        let result = tls_client(id)
            .get(format!("https://api.test:{tls_port}/v1/models"))
            .bearer_auth(TEST_KEY)
            .send()
            .await;
        assert!(result.is_err(), "{who}: {result:?}");
    }
    // The plain listener still serves.
    assert_eq!(gw.chat(chat_body("model-a")).await.status(), 200);
}

// === upstream TLS ===

/// Terminates TLS in front of a plain mock: a certificate for `models.test` from a
/// private CA, and client certificates from another CA required.
async fn tls_forwarder(to: u16, leaf: &Leaf, client_ca: &Path) -> u16 {
    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = std::fs::read_to_string(client_ca).unwrap();
    roots.add(pem_to_der(&ca_pem).into()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(leaf_chain(leaf), leaf_key(leaf))
        .unwrap();
    forward_tls(config, to).await
}

fn leaf_chain(leaf: &Leaf) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    vec![rustls::pki_types::CertificateDer::from(leaf.der.clone())]
}

fn leaf_key(leaf: &Leaf) -> rustls::pki_types::PrivateKeyDer<'static> {
    rustls::pki_types::PrivateKeyDer::try_from(
        KeyPair::from_pem(&std::fs::read_to_string(&leaf.key).unwrap())
            .unwrap()
            .serialize_der(),
    )
    .unwrap()
}

/// Accepts TLS with `config` and copies the plain bytes to and from `127.0.0.1:to`.
async fn forward_tls(config: rustls::ServerConfig, to: u16) -> u16 {
    ring();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(("127.0.0.1", to)).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn upstream_tls_uses_the_provider_ca_and_client_certificate_and_refuses_a_bad_one() {
    let mock = Mock::start(&[]);
    let files = TempDir::new();
    let private = Ca::new(&files.0, "private");
    let gateways = Ca::new(&files.0, "gateways");
    let upstream = private.leaf("upstream", &["models.test"]);
    let gateway_client = gateways.leaf("gateway", &["gateway.test"]);
    let port = tls_forwarder(mock.port, &upstream, &gateways.pem_path()).await;
    let config = format!(
        r#"
providers:
  private:
    kind: openai
    endpoints: ["https://127.0.0.1:{port}"]
    api_keys: ["sk-private"]
    tls: {{ ca: {ca}, client_cert: {cert}, client_key: {key}, server_name: models.test }}
  no-client-cert:
    kind: openai
    endpoints: ["https://127.0.0.1:{port}"]
    api_keys: ["sk-private"]
    tls: {{ ca: {ca}, server_name: models.test }}
  system-roots:
    kind: openai
    endpoints: ["https://127.0.0.1:{port}"]
    api_keys: ["sk-private"]
models:
  private: {{ provider: private, model: upstream-private }}
  no-client-cert: {{ provider: no-client-cert, model: upstream-private }}
  system-roots: {{ provider: system-roots, model: upstream-private }}
keys:
  - {{ name: test, hash: "{k}", team: core }}
routes:
  - {{ name: nc, match: {{ model: no-client-cert }}, targets: [{{ model: no-client-cert }}], retry: {{ attempts: 1 }} }}
  - {{ name: sr, match: {{ model: system-roots }}, targets: [{{ model: system-roots }}], retry: {{ attempts: 1 }} }}
"#,
        ca = private.pem_path().display(),
        cert = gateway_client.cert.display(),
        key = gateway_client.key.display(),
        k = key_hash(TEST_KEY),
    );
    let gw = Gateway::start(&config).await;

    let resp = gw.chat(chat_body("private")).await;
    assert_eq!(resp.status(), 200);
    let seen = mock.chat_requests().await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["body"]["model"], "upstream-private");

    // The server's certificate is not from a system root, and the forwarder wants a
    // client certificate: both fail before any byte reaches the provider.
    for model in ["system-roots", "no-client-cert"] {
        let resp = gw.chat(chat_body(model)).await;
        let status = resp.status().as_u16();
        assert!(matches!(status, 502 | 503), "{model}: {status}");
        let body: serde_json::Value = resp.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("upstream"), "{model}: {body}");
    }
    assert_eq!(mock.chat_requests().await.len(), 1);
}

// === HTTP/2 to providers ===

async fn mock_connections(mock: &Mock) -> u64 {
    get_json(&format!("{}/__mock/stats", mock.url)).await["connections"]
        .as_u64()
        .unwrap()
}

/// Streams `count` completions of `model` at once; each must end in `[DONE]` with text.
async fn concurrent_streams(gw: &Gateway, model: &str, count: usize) {
    let mut tasks = Vec::new();
    for _ in 0..count {
        let url = gw.chat_url();
        let model = model.to_owned();
        tasks.push(tokio::spawn(async move {
            let resp = client()
                .post(url)
                .bearer_auth(TEST_KEY)
                .json(&json!({
                    "model": model,
                    "stream": true,
                    "messages": [{"role": "user", "content": "Say hello"}],
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.text().await.unwrap()
        }));
    }
    for task in tasks {
        let text = task.await.unwrap();
        let data = sse_data(&text);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
        assert!(!stream_text(&data).is_empty(), "{text}");
    }
}

#[tokio::test]
async fn http2_providers_carry_many_streams_on_few_connections_in_the_clear_and_over_tls() {
    const STREAMS: usize = 30;
    // 20 tokens 50 ms apart: every stream is open while the others start.
    let args = ["--tokens", "20", "--token-delay", "50ms"];
    let (h1_mock, h2c_mock, tls_mock) =
        (Mock::start(&args), Mock::start(&args), Mock::start(&args));
    let files = TempDir::new();
    let ca = Ca::new(&files.0, "models");
    let leaf = ca.leaf("upstream", &["models.test"]);
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(leaf_chain(&leaf), leaf_key(&leaf))
        .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tls_port = forward_tls(tls, tls_mock.port).await;
    let config = format!(
        r#"
providers:
  h1: {{ kind: openai, endpoints: ["{h1}"], api_keys: ["sk-h1"] }}
  h2c: {{ kind: openai, endpoints: ["{h2c}"], api_keys: ["sk-h2c"], http2: true }}
  h2:
    kind: openai
    endpoints: ["https://127.0.0.1:{tls_port}"]
    api_keys: ["sk-h2"]
    http2: true
    http2_streams: 50
    tls: {{ ca: {ca}, server_name: models.test }}
models:
  h1: {{ provider: h1, model: upstream-h1 }}
  h2c: {{ provider: h2c, model: upstream-h2c }}
  h2: {{ provider: h2, model: upstream-h2 }}
keys:
  - {{ name: test, hash: "{k}", team: core }}
"#,
        h1 = h1_mock.url,
        h2c = h2c_mock.url,
        ca = ca.pem_path().display(),
        k = key_hash(TEST_KEY),
    );
    let gw = Gateway::start(&config).await;
    for (model, mock) in [("h1", &h1_mock), ("h2c", &h2c_mock), ("h2", &tls_mock)] {
        // One request first, so a connection is there to be shared.
        let resp = gw.chat(chat_body(model)).await;
        assert_eq!(resp.status(), 200, "{model}");
        let before = mock_connections(mock).await;
        concurrent_streams(&gw, model, STREAMS).await;
        let opened = mock_connections(mock).await - before;
        if model == "h1" {
            // The control: HTTP/1.1 needs a connection per open stream.
            assert!(
                opened as usize >= STREAMS - 1,
                "{model}: {opened} connections"
            );
        } else {
            assert!(
                opened <= 3,
                "{model}: {opened} new connections for {STREAMS} streams"
            );
        }
        let seen = mock.chat_requests().await;
        assert_eq!(seen.len(), STREAMS + 1, "{model}");
        assert!(seen
            .iter()
            .all(|r| r["body"]["model"] == format!("upstream-{model}")));
    }
    // Usage is metered from HTTP/2 streams as from HTTP/1.1 ones.
    let output_tokens = |m: &str| {
        tollgate_tests::metric_value(
            m,
            "tollgate_tokens_total",
            &["model=\"h2c\"", "direction=\"output\""],
        )
    };
    let metrics = gw
        .metrics_when(|m| output_tokens(m).is_some_and(|n| n >= (STREAMS * 20) as f64))
        .await;
    let line = tollgate_tests::metric_line(
        &metrics,
        "tollgate_tokens_total",
        &["model=\"h2c\"", "direction=\"output\""],
    );
    let output: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(output >= (STREAMS * 20) as f64, "{line}");
}

// === reload ===

fn one_mock_config(mock: &Mock) -> String {
    format!(
        r#"
providers:
  a: {{ kind: openai, endpoints: ["{url}"], api_keys: ["sk-a"] }}
models:
  model-a: {{ provider: a, model: upstream-a }}
keys:
  - {{ name: test, hash: "{k}", team: core }}
"#,
        url = mock.url,
        k = key_hash(TEST_KEY),
    )
}

/// Sends chat requests on `workers` tasks until stopped; counts answers, keeps failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(url: String, model: &str, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let tasks = (0..workers)
            .map(|_| {
                let (stop, ok, url) = (stop.clone(), ok.clone(), url.clone());
                let body = chat_body(model);
                tokio::spawn(async move {
                    let mut errors = Vec::new();
                    let http = client();
                    while !stop.load(Ordering::Relaxed) {
                        let sent = http
                            .post(&url)
                            .bearer_auth(TEST_KEY)
                            .json(&body)
                            .send()
                            .await;
                        let outcome = match sent {
                            Ok(r) if r.status() == 200 => r
                                .bytes()
                                .await
                                .map(|_| ())
                                .map_err(|e| format!("body: {e}")),
                            Ok(r) => Err(format!("status {}", r.status())),
                            Err(e) => Err(e.to_string()),
                        };
                        match outcome {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => errors.push(e),
                        }
                    }
                    errors
                })
            })
            .collect();
        Load { stop, ok, tasks }
    }

    async fn wait_for(&self, answers: usize) {
        let ok = self.ok.clone();
        assert!(
            eventually(Duration::from_secs(30), || {
                let ok = ok.clone();
                async move { ok.load(Ordering::Relaxed) >= answers }
            })
            .await,
            "the load made no progress"
        );
    }

    /// Stops and returns (answers, failure descriptions).
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        for task in self.tasks {
            errors.extend(task.await.unwrap());
        }
        (self.ok.load(Ordering::Relaxed), errors)
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

async fn loaded(gw: &Gateway) -> serde_json::Value {
    get_json(&format!("{}/admin/config", gw.admin_url)).await
}

async fn circuit(gw: &Gateway, provider: &str) -> serde_json::Value {
    let ups = gw.upstreams().await;
    ups["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == provider)
        .map(|p| p["endpoints"][0]["circuit"].clone())
        .unwrap()
}

#[tokio::test]
async fn reload_under_load_swaps_routes_refuses_a_bad_file_and_keeps_open_circuits() {
    let fast = Mock::start(&[]);
    let flaky = Mock::start(&[]);
    let files = TempDir::new();
    let pid_file = files.0.join("tollgate.pid");
    let config = format!(
        r#"
providers:
  a: {{ kind: openai, endpoints: ["{a}"], api_keys: ["sk-a"] }}
  flaky:
    kind: openai
    endpoints: ["{b}"]
    api_keys: ["sk-b"]
    circuit_breaker: {{ failures: 1, cooldown: 10m }}
models:
  model-a: {{ provider: a, model: upstream-a }}
  model-flaky: {{ provider: flaky, model: upstream-flaky }}
keys:
  - {{ name: test, hash: "{k}", team: core }}
routes:
  - {{ name: flaky, match: {{ model: model-flaky }}, targets: [{{ model: model-flaky }}], retry: {{ attempts: 1 }} }}
"#,
        a = fast.url,
        b = flaky.url,
        k = key_hash(TEST_KEY),
    );
    let gw =
        Gateway::start_with_server(&config, &format!("  pid_file: {}\n", pid_file.display())).await;
    let pid = read_pid(&pid_file);
    let first = loaded(&gw).await;
    assert!(first["hash"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(first["reloads"], 0);

    // Open the flaky provider's circuit.
    flaky.faults(json!([{"status": 500, "times": 1}])).await;
    assert_ne!(gw.chat(chat_body("model-flaky")).await.status(), 200);
    assert_eq!(circuit(&gw, "flaky").await, "open");

    let load = Load::start(gw.chat_url(), "model-a", 4);
    load.wait_for(20).await;

    // A new model and a new route to it, by SIGHUP.
    let original = std::fs::read_to_string(&gw.config_path).unwrap();
    let with_new = original
        .replace(
            "models:\n",
            "models:\n  model-new: { provider: a, model: upstream-new }\n",
        )
        .replace(
            "routes:\n",
            "routes:\n  - { name: fresh, match: { model: fresh-chat }, targets: [{ model: model-new }], retry: { attempts: 1 } }\n",
        );
    assert_ne!(with_new, original);
    std::fs::write(&gw.config_path, &with_new).unwrap();
    assert_eq!(gw.chat(chat_body("model-new")).await.status(), 404);
    assert_eq!(gw.chat(chat_body("fresh-chat")).await.status(), 404);
    signal(pid, "HUP");
    assert!(
        eventually(Duration::from_secs(10), || async {
            loaded(&gw).await["reloads"] == 1
        })
        .await,
        "SIGHUP did not reload"
    );
    let resp = gw.chat(chat_body("model-new")).await;
    assert_eq!(resp.status(), 200);
    // The new route serves its alias with the new model.
    let resp = gw.chat(chat_body("fresh-chat")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-tollgate-model"], "model-new");
    let metrics = gw.metrics().await;
    tollgate_tests::metric_line(
        &metrics,
        "tollgate_requests_total",
        &["route=\"fresh\"", "model=\"model-new\"", "status=\"2xx\""],
    );
    assert_eq!(
        circuit(&gw, "flaky").await,
        "open",
        "an unchanged provider keeps its circuit"
    );
    let hash = loaded(&gw).await["hash"].clone();
    assert_ne!(hash, first["hash"]);
    load.wait_for(load.ok.load(Ordering::Relaxed) + 20).await;

    // A file with problems is refused, by the admin endpoint and by SIGHUP alike.
    std::fs::write(
        &gw.config_path,
        with_new.replace(
            "model-new: { provider: a,",
            "model-new: { provider: missing,",
        ),
    )
    .unwrap();
    let resp = client()
        .post(format!("{}/admin/reload", gw.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    let problems = body["error"]["problems"].to_string();
    assert!(problems.contains("unknown provider 'missing'"), "{body}");
    assert!(
        problems.contains("tollgate.yaml:"),
        "problems name file and line: {body}"
    );
    signal(pid, "HUP");
    let metrics = |gw_admin: String| async move {
        client()
            .get(format!("{gw_admin}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            metrics(gw.admin_url.clone())
                .await
                .contains("tollgate_config_reloads_total{result=\"invalid\"} 2")
        })
        .await,
        "the refused SIGHUP reload is counted"
    );
    assert_eq!(loaded(&gw).await["hash"], hash, "the running config stays");
    assert_eq!(gw.chat(chat_body("model-new")).await.status(), 200);
    load.wait_for(load.ok.load(Ordering::Relaxed) + 20).await;

    let (answers, errors) = load.finish().await;
    assert!(
        errors.is_empty(),
        "{} of {answers} failed: {errors:?}",
        errors.len()
    );
    let text = metrics(gw.admin_url.clone()).await;
    assert!(
        text.contains("tollgate_config_reloads_total{result=\"ok\"} 1"),
        "{text}"
    );
    let ready = client()
        .get(format!("{}/readyz", gw.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["config"]["hash"], hash);
}

/// Opens a stream of `model` and returns its task, which yields the whole body once it
/// ends.
async fn open_stream(url: String, model: &str) -> tokio::task::JoinHandle<String> {
    let mut body = chat_body(model);
    body["stream"] = json!(true);
    let resp = client()
        .post(url)
        .bearer_auth(TEST_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{model}");
    tokio::spawn(async move { resp.text().await.unwrap_or_default() })
}

/// A stream's body ended with `[DONE]`, carried text, and no error.
fn assert_complete_stream(text: &str) {
    let data = sse_data(text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    assert!(!stream_text(&data).is_empty(), "{text}");
    assert!(!text.contains("\"error\""), "{text}");
}

#[tokio::test]
async fn streams_open_across_a_reload_finish_on_the_config_they_started_with() {
    // 50 tokens, 100 ms apart: each stream lasts about five seconds, far longer than a reload.
    let slow = Mock::start(&["--tokens", "50", "--token-delay", "100ms"]);
    let fast = Mock::start(&[]);
    let before = format!(
        r#"
providers:
  slow: {{ kind: openai, endpoints: ["{slow}"], api_keys: ["sk-s"] }}
  fast: {{ kind: openai, endpoints: ["{fast}"], api_keys: ["sk-f"] }}
models:
  model-moved: {{ provider: slow, model: upstream-before }}
  model-gone: {{ provider: slow, model: upstream-gone }}
keys:
  - {{ name: test, hash: "{k}", team: core }}
routes:
  - {{ name: moved, match: {{ model: moved-chat }}, targets: [{{ model: model-moved }}], retry: {{ attempts: 1 }} }}
"#,
        slow = slow.url,
        fast = fast.url,
        k = key_hash(TEST_KEY),
    );
    let gw = Gateway::start(&before).await;
    let moved = open_stream(gw.chat_url(), "moved-chat").await;
    let gone = open_stream(gw.chat_url(), "model-gone").await;

    // The route's model moves to the other provider under another upstream name, and the
    // other model leaves the catalog.
    let original = std::fs::read_to_string(&gw.config_path).unwrap();
    let after = original
        .replace(
            "model-moved: { provider: slow, model: upstream-before }",
            "model-moved: { provider: fast, model: upstream-after }",
        )
        .replace(
            "  model-gone: { provider: slow, model: upstream-gone }\n",
            "",
        );
    assert_ne!(after, original);
    std::fs::write(&gw.config_path, &after).unwrap();
    let resp = client()
        .post(format!("{}/admin/reload", gw.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert!(
        !moved.is_finished() && !gone.is_finished(),
        "the streams ended before the reload; the test proves nothing"
    );

    // New requests see the new config at once.
    let resp = gw.chat(chat_body("moved-chat")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(gw.chat(chat_body("model-gone")).await.status(), 404);
    let seen = fast.chat_requests().await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["body"]["model"], "upstream-after");

    // The open streams finish, whole, from the provider and upstream model they started on.
    assert_complete_stream(&moved.await.unwrap());
    assert_complete_stream(&gone.await.unwrap());
    let mut upstream: Vec<String> = slow
        .chat_requests()
        .await
        .iter()
        .map(|r| r["body"]["model"].as_str().unwrap().to_owned())
        .collect();
    upstream.sort();
    assert_eq!(upstream, ["upstream-before", "upstream-gone"]);
    // Both are metered under the models they were served as, one of which is gone.
    let metered = |m: &str| {
        ["model-moved", "model-gone"].iter().all(|model| {
            tollgate_tests::metric_value(
                m,
                "tollgate_tokens_total",
                &[&format!("model=\"{model}\""), "direction=\"output\""],
            )
            .is_some_and(|n| n >= 50.0)
        })
    };
    let metrics = gw.metrics_when(metered).await;
    assert!(metered(&metrics), "{metrics}");
    assert!(metrics.contains("tollgate_config_reloads_total{result=\"ok\"} 1"));
}

// === upgrade ===

/// Starts `tollgate run` on `config`, with `--upgrade` when asked.
fn run_gateway(config: &Path, upgrade: bool, log: &Path) -> Proc {
    let mut cmd = Command::new(bin_dir().join("tollgate"));
    cmd.args(["run", "-c"]).arg(config);
    if upgrade {
        cmd.arg("--upgrade");
    }
    let log = std::fs::File::create(log).unwrap();
    Proc(
        cmd.env("TOLLGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    )
}

async fn ready(admin: &str) -> bool {
    client()
        .get(format!("{admin}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

/// Whether `/readyz` on `admin` answers 503 from a process that is draining.
async fn draining(admin: &str) -> bool {
    let Ok(resp) = client().get(format!("{admin}/readyz")).send().await else {
        return false;
    };
    if resp.status() != 503 {
        return false;
    }
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    body["status"] == "draining"
}

#[tokio::test]
async fn upgrade_hands_over_the_sockets_while_open_streams_finish_on_the_old_process() {
    let fast = Mock::start(&[]);
    // 30 tokens, 100 ms apart: each stream lasts about three seconds.
    let slow = Mock::start(&["--tokens", "30", "--token-delay", "100ms"]);
    let dir = TempDir::new();
    let (port, admin_port) = (free_port(), free_port());
    let config = dir.0.join("tollgate.yaml");
    let pid_file = dir.0.join("tollgate.pid");
    std::fs::write(
        &config,
        format!(
            r#"
server:
  listen: ["127.0.0.1:{port}"]
  admin_listen: "127.0.0.1:{admin_port}"
  threads: 2
  shutdown_grace: 60s
  upgrade_sock: {sock}
  pid_file: {pid}
providers:
  fast: {{ kind: openai, endpoints: ["{fast}"], api_keys: ["sk-f"] }}
  slow: {{ kind: openai, endpoints: ["{slow}"], api_keys: ["sk-s"] }}
models:
  model-a: {{ provider: fast, model: upstream-a }}
  model-slow: {{ provider: slow, model: upstream-slow }}
keys:
  - {{ name: test, hash: "{k}", team: core }}
ledger:
  path: {db}
  spool: {spool}
"#,
            sock = dir.0.join("upgrade.sock").display(),
            pid = pid_file.display(),
            fast = fast.url,
            slow = slow.url,
            k = key_hash(TEST_KEY),
            db = dir.0.join("usage.db").display(),
            spool = dir.0.join("spool").display(),
        ),
    )
    .unwrap();
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let admin = format!("http://127.0.0.1:{admin_port}");
    let mut old = run_gateway(&config, false, &dir.0.join("old.log"));
    assert!(
        eventually(Duration::from_secs(30), || ready(&admin)).await,
        "the first process did not become ready"
    );
    let old_pid = read_pid(&pid_file);
    assert_eq!(old_pid, old.0.id());

    let load = Load::start(url.clone(), "model-a", 4);
    load.wait_for(20).await;
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(open_stream(url.clone(), "model-slow").await);
    }

    let started = Instant::now();
    let mut new = run_gateway(&config, true, &dir.0.join("new.log"));
    // The new process waits on the upgrade socket for the old one's listeners.
    let sock = dir.0.join("upgrade.sock");
    assert!(
        eventually(Duration::from_secs(20), || {
            let sock = sock.clone();
            async move { sock.exists() }
        })
        .await,
        "the new process did not open the upgrade socket"
    );
    signal(old_pid, "QUIT");
    // From the hand-over on, the old process answers its readiness probe with 503: until it
    // closes the listeners (about 5 s later) both processes accept on the admin socket, and
    // a probe that reaches the old one sees it draining. (On SIGTERM the listeners close at
    // once, so a probe then fails by connection refused instead.)
    assert!(
        eventually(Duration::from_secs(10), || draining(&admin)).await,
        "the old process never answered /readyz with 503 while draining"
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            std::fs::read_to_string(&pid_file).is_ok_and(|p| p.trim() == new.0.id().to_string())
        })
        .await,
        "the new process did not take over"
    );
    // A stream opened now is served by one of the two; it must finish as well.
    streams.push(open_stream(url.clone(), "model-slow").await);

    // The old process exits once its streams are done, well before its grace period.
    let exited = eventually(Duration::from_secs(40), || {
        let done = old.0.try_wait().unwrap().is_some();
        async move { done }
    })
    .await;
    assert!(exited, "the old process did not drain and exit");
    assert!(started.elapsed() < Duration::from_secs(50));

    for stream in streams {
        assert_complete_stream(&stream.await.unwrap());
    }
    load.wait_for(load.ok.load(Ordering::Relaxed) + 20).await;
    let (answers, errors) = load.finish().await;
    assert!(
        errors.is_empty(),
        "{} of {answers} failed: {errors:?}",
        errors.len()
    );
    assert!(
        ready(&admin).await,
        "the new process serves the admin listener"
    );
    assert!(
        new.0.try_wait().unwrap().is_none(),
        "the new process runs on"
    );
}

// === deployment files ===

/// `deploy/check.py` with the built gateway: the Dockerfile copies the whole workspace,
/// the compose file, its gateway configs (`tollgate check`), the Helm chart (rendered by
/// helm where installed, its raw templates' structure otherwise), the dashboards, alert
/// rules and systemd unit are sound.
#[test]
fn deployment_files_pass_their_checks() {
    let tollgate = bin_dir().join("tollgate");
    let script = tollgate_tests::workspace_dir().join("deploy/check.py");
    let out = match Command::new("python3")
        .arg(&script)
        .arg("--tollgate")
        .arg(&tollgate)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run scripts/setup.sh (python3: {e})"
            );
            eprintln!("skipped: python3 not found ({e})");
            return;
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "deploy/check.py failed:\n{text}");
    assert!(text.contains("(tollgate check)"), "{text}");
}
