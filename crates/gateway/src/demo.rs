//! `tollgate demo`: two mock providers on loopback and the gateway in front of them with
//! the embedded `conf/demo.yaml`, so a fresh machine shows the whole flow with no keys.

use std::process::ExitCode;

use tollgate_mock::MockConfig;

/// The demo configuration, embedded so the binary needs no files.
const DEMO_CONFIG: &str = include_str!("../../../conf/demo.yaml");

/// The demo's gateway key. Its hash is in `conf/demo.yaml`; it guards nothing but mocks.
pub const DEMO_KEY: &str = "tg-demo-key";

pub fn run(listen: &str, admin_listen: &str) -> ExitCode {
    crate::server::init_logging();
    let mocks = match start_mocks() {
        Ok(addrs) => addrs,
        Err(err) => {
            eprintln!("could not start the mock providers: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Interpolated into conf/demo.yaml; set before any other thread reads the environment.
    std::env::set_var("TOLLGATE_DEMO_MOCK_A", format!("http://{}", mocks[0]));
    std::env::set_var("TOLLGATE_DEMO_MOCK_B", format!("http://{}", mocks[1]));
    let mut config = match tollgate_config::parse(DEMO_CONFIG, "conf/demo.yaml") {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    config.server.listen = vec![listen.to_owned()];
    config.server.admin_listen = Some(admin_listen.to_owned());
    print_examples(listen, admin_listen);
    crate::server::run(config)
}

/// Starts the two mock providers on their own runtime thread, returning their addresses.
fn start_mocks() -> std::io::Result<Vec<std::net::SocketAddr>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("tollgate-demo-mocks".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                let mut addrs = Vec::new();
                for reply in [
                    "Hello from the fast demo model! Tollgate routed, metered and relayed this answer.",
                    "Hello from the smart demo model! Tollgate routed, metered and relayed this answer.",
                ] {
                    let cfg = MockConfig {
                        reply: Some(reply.to_owned()),
                        token_delay: std::time::Duration::from_millis(30),
                        ..MockConfig::default()
                    };
                    match tollgate_mock::spawn(cfg).await {
                        Ok((addr, _task)) => addrs.push(addr),
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
                let _ = tx.send(Ok(addrs));
                std::future::pending::<()>().await;
            });
        })?;
    rx.recv()
        .map_err(|_| std::io::Error::other("mock thread ended before starting"))?
}

fn print_examples(listen: &str, admin_listen: &str) {
    let base = format!("http://{listen}");
    println!(
        r#"
Tollgate demo: gateway on {base}, admin on http://{admin_listen}, two mock providers.
Gateway key: {DEMO_KEY}

  # a chat completion, routed by the 'best-cheap-chat' route (80/20 split, fallback)
  curl -s {base}/v1/chat/completions -H 'Authorization: Bearer {DEMO_KEY}' \
    -H 'content-type: application/json' \
    -d '{{"model":"best-cheap-chat","messages":[{{"role":"user","content":"Hello!"}}]}}'

  # the same, streamed
  curl -sN {base}/v1/chat/completions -H 'Authorization: Bearer {DEMO_KEY}' \
    -H 'content-type: application/json' \
    -d '{{"model":"best-cheap-chat","stream":true,"messages":[{{"role":"user","content":"Hello!"}}]}}'

  # models this key may use, embeddings, upstream state
  curl -s {base}/v1/models -H 'Authorization: Bearer {DEMO_KEY}'
  curl -s {base}/v1/embeddings -H 'Authorization: Bearer {DEMO_KEY}' \
    -H 'content-type: application/json' -d '{{"model":"demo-embed","input":"hello"}}'
  curl -s http://{admin_listen}/admin/upstreams

  # OpenAI Python SDK: only base_url and api_key change
  python3 -c 'from openai import OpenAI
c = OpenAI(base_url="{base}/v1", api_key="{DEMO_KEY}")
for ch in c.chat.completions.create(model="best-cheap-chat", stream=True,
        messages=[{{"role":"user","content":"Hi"}}]):
    print(ch.choices[0].delta.content or "", end="", flush=True)
print()'

Press Ctrl-C to stop.
"#
    );
}
