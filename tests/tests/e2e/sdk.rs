//! The official OpenAI Python SDK, pointed at Tollgate by `base_url` only.

use std::process::Command;

use tollgate_tests::*;

const SCRIPT: &str = r#"
import sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0)
r = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
assert r.choices[0].message.content, r
assert r.usage.completion_tokens == 6, r.usage
text = ""
for chunk in client.chat.completions.create(model="chat", stream=True,
        messages=[{"role": "user", "content": "hi"}]):
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
assert len(text.split()) == 6, text
models = [m.id for m in client.models.list()]
assert "chat" in models, models
emb = client.embeddings.create(model="embed-a", input="hello")
assert len(emb.data[0].embedding) > 0
try:
    client.chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}])
    raise SystemExit("expected NotFoundError")
except Exception as e:
    assert type(e).__name__ == "NotFoundError", repr(e)
print("sdk ok")
"#;

#[tokio::test]
async fn openai_python_sdk_is_a_drop_in_base_url_switch() {
    let venv = std::env::var("TOLLGATE_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| workspace_dir().join(".venv"));
    let python = venv.join("bin/python");
    if !python.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run scripts/setup.sh (no {python:?})"
        );
        eprintln!("skipping: no venv at {venv:?}; run scripts/setup.sh");
        return;
    }
    let a = Mock::start(&["--tokens", "6"]);
    let b = Mock::start(&[]);
    let routes =
        "routes:\n  - name: main\n    match: { model: chat }\n    targets: [{ model: model-a }]\n";
    let gw = Gateway::start(&two_mock_config(&a, &b, routes)).await;
    let url = gw.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg("-c")
            .arg(SCRIPT)
            .arg(url)
            .arg(TEST_KEY)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("sdk ok"));
}
