use orch_config::*;
use std::path::Path;
#[test]
fn show() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("orch.toml");
    for t in ["data_dir = \".orch\"\n\n[providers.local\nkind = \"openai\"\n", "x = \"unterminated\n", "[[projects]]\nname=\"a\"\n", "[providers.l]\nkind=\"openai\"\nbase_url=\"http://x\"\napi_key_env=\"K\"\n[[projects]]\nname=\"a\"\npath=\".\"\nworker_model=\"l:m\"\nmax_workers=-1\n"] {
        println!("{}", load_str(t, ConfigFormat::Toml, &p).unwrap_err());
    }
    let c = load_str("[providers.l]\nkind=\"openai\"\nbase_url=\"http://x\"\napi_key_env=\"K\"\n[[projects]]\nname=\"a\"\npath=\".\"\nworker_model=\"l:m\"\n", ConfigFormat::Toml, &p).unwrap();
    println!("{}", c.to_toml().unwrap());
    println!("{:?}", c);
    for t in ["providers:\n  l:\n    kind: openai\n   bad: indent\n", "projects:\n  - name: a\n"] {
        println!("{}", load_str(t, ConfigFormat::Yaml, Path::new("o.yaml")).unwrap_err());
    }
    println!("{}", load_str("{\"projects\": [ {\"name\": 1} ]}", ConfigFormat::Json, Path::new("o.json")).unwrap_err());
    println!("{}", load_str("{\"projects\": [ ", ConfigFormat::Json, Path::new("o.json")).unwrap_err());
}
