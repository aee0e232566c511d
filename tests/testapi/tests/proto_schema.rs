//! The protobuf field table is generated from the k8s-pb and k8s-openapi crates: this test
//! regenerates it and fails when the committed file differs. `KELP_UPDATE_PROTO=1 cargo
//! test -p kelp-testapi --test proto_schema` rewrites it.

mod protogen;

#[test]
fn committed_proto_schema_is_current() {
    let table = protogen::generate();
    let text = protogen::render(&table);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/proto/schema.json");
    if std::env::var_os("KELP_UPDATE_PROTO").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(
        committed == text,
        "{} is out of date: run KELP_UPDATE_PROTO=1 cargo test -p kelp-testapi --test proto_schema",
        path.display()
    );
}
