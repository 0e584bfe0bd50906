//! The official OpenAI and Anthropic Python SDKs, pointed at Tollgate by `base_url` only,
//! against every provider kind, streaming and tool calls included.

use std::path::PathBuf;
use std::process::Command;

use tollgate_tests::*;

use crate::providers;

const OPENAI_SCRIPT: &str = r#"
import sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0)
tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
for model in sys.argv[3:]:
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content, (model, r)
    assert r.usage.completion_tokens > 0, (model, r.usage)
    text = ""
    for chunk in client.chat.completions.create(model=model, stream=True,
            messages=[{"role": "user", "content": "hi"}]):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    assert text.strip(), (model, text)
    t = client.chat.completions.create(model=model, tools=tools, tool_choice="required",
        messages=[{"role": "user", "content": "Weather in Paris?"}])
    call = t.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and t.choices[0].finish_reason == "tool_calls", (model, t)
    names = []
    for chunk in client.chat.completions.create(model=model, tools=tools, tool_choice="required",
            stream=True, messages=[{"role": "user", "content": "Weather in Paris?"}]):
        for c in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            if c.function and c.function.name:
                names.append(c.function.name)
    assert names == ["get_weather"], (model, names)
models = [m.id for m in client.models.list()]
assert "m-openai" in models, models
emb = client.embeddings.create(model="embed", input="hello")
assert len(emb.data[0].embedding) > 0
try:
    client.chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}])
    raise SystemExit("expected NotFoundError")
except Exception as e:
    assert type(e).__name__ == "NotFoundError", repr(e)
print("sdk ok")
"#;

const ANTHROPIC_SCRIPT: &str = r#"
import sys
import anthropic
client = anthropic.Anthropic(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0)
for model in sys.argv[3:]:
    m = client.messages.create(model=model, max_tokens=64,
        messages=[{"role": "user", "content": "hi"}])
    assert m.content[0].type == "text" and m.content[0].text, (model, m)
    assert m.usage.output_tokens > 0, (model, m.usage)
    text = ""
    with client.messages.stream(model=model, max_tokens=64,
            messages=[{"role": "user", "content": "hi"}]) as stream:
        for piece in stream.text_stream:
            text += piece
        final = stream.get_final_message()
    assert text.strip(), (model, text)
    assert final.stop_reason == "end_turn", (model, final)
    t = client.messages.create(model=model, max_tokens=64,
        tools=[{"name": "get_weather", "description": "Weather of a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "Weather in Paris?"}])
    uses = [b for b in t.content if b.type == "tool_use"]
    assert uses and uses[0].name == "get_weather", (model, t)
    assert t.stop_reason == "tool_use", (model, t)
    with client.messages.stream(model=model, max_tokens=64,
            tools=[{"name": "get_weather", "description": "Weather of a city",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            tool_choice={"type": "any"},
            messages=[{"role": "user", "content": "Weather in Paris?"}]) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert uses and uses[0].name == "get_weather", (model, final)
try:
    client.messages.create(model="missing", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    raise SystemExit("expected NotFoundError")
except anthropic.NotFoundError:
    pass
print("anthropic sdk ok")
"#;

/// The venv's python, or `None` (a skip) outside CI when `scripts/setup.sh` has not run.
fn python() -> Option<PathBuf> {
    let venv = std::env::var("TOLLGATE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_dir().join(".venv"));
    let python = venv.join("bin/python");
    if python.exists() {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run scripts/setup.sh (no {python:?})"
    );
    eprintln!("skipping: no venv at {venv:?}; run scripts/setup.sh");
    None
}

/// Runs `script` with the gateway's URL, the test key and one model per provider kind.
async fn run_script(python: PathBuf, script: &'static str, url: String, marker: &str) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg("-c")
            .arg(script)
            .args([url.as_str(), TEST_KEY])
            .args(providers::KINDS.map(|k| format!("m-{k}")))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(marker));
}

#[tokio::test]
async fn openai_python_sdk_is_a_drop_in_base_url_switch_for_every_provider_kind() {
    let Some(python) = python() else { return };
    let mock = Mock::start(&["--tokens", "6", "--token-delay", "1ms"]);
    let config = providers::config(&mock).replace(
        "models:\n",
        "models:\n  embed: { provider: p-openai, model: text-embedding-3-small, mode: embeddings }\n",
    );
    let gw = Gateway::start(&config).await;
    run_script(python, OPENAI_SCRIPT, gw.url.clone(), "sdk ok").await;
}

#[tokio::test]
async fn anthropic_python_sdk_reaches_every_provider_kind() {
    let Some(python) = python() else { return };
    let mock = Mock::start(&["--tokens", "5", "--token-delay", "1ms"]);
    let gw = Gateway::start(&providers::config(&mock)).await;
    run_script(python, ANTHROPIC_SCRIPT, gw.url.clone(), "anthropic sdk ok").await;
}
