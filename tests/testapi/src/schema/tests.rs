use super::*;
use serde_json::json;

const NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A CRD-like root schema exercising every feature the module handles.
fn fixture() -> Value {
    json!({
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "required": ["modelName", "nodePools"],
                "x-kubernetes-validations": [{
                    "rule": "(has(self.image) ? 1 : 0) + (has(self.modelRef) ? 1 : 0) == 1",
                    "message": "exactly one of image or modelRef must be set"
                }],
                "properties": {
                    "modelName": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 63,
                        "x-kubernetes-validations": [
                            {"rule": "self == oldSelf", "message": "modelName is immutable"}
                        ]
                    },
                    "runtime": {"type": "string", "enum": ["deepaas", "custom"], "default": "deepaas"},
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 8080},
                    "timeoutSeconds": {"type": "integer", "format": "int32"},
                    "image": {"type": "string"},
                    "modelRef": {"type": "string"},
                    "description": {"type": "string", "nullable": true},
                    "maxSurge": {
                        "x-kubernetes-int-or-string": true,
                        "anyOf": [{"type": "integer"}, {"type": "string"}],
                        "default": "25%"
                    },
                    "nodePools": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 32,
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name"],
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string", "pattern": NAME_PATTERN},
                                "replicas": {
                                    "type": "integer",
                                    "minimum": 0,
                                    "default": 1,
                                    "x-kubernetes-validations": [
                                        {"rule": "self <= 100", "message": "replicas must be at most 100"}
                                    ]
                                },
                                "gpu": {
                                    "type": "object",
                                    "x-kubernetes-validations": [
                                        {"rule": "self == oldSelf", "message": "gpu is immutable"}
                                    ],
                                    "properties": {
                                        "count": {"type": "integer", "default": 0},
                                        "model": {"type": "string", "default": "any"}
                                    }
                                }
                            }
                        }
                    },
                    "tags": {
                        "type": "array",
                        "x-kubernetes-list-type": "set",
                        "items": {"type": "string"}
                    },
                    "resources": {
                        "type": "object",
                        "default": {},
                        "properties": {
                            "limits": {
                                "type": "object",
                                "default": {},
                                "properties": {
                                    "cpu": {"type": "string", "default": "1"},
                                    "memory": {"type": "string", "default": "1Gi"}
                                }
                            }
                        }
                    },
                    "labels": {
                        "type": "object",
                        "additionalProperties": {"type": "string", "maxLength": 10}
                    },
                    "env": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "properties": {
                                "value": {"type": "string"},
                                "secret": {"type": "boolean", "default": false}
                            }
                        }
                    },
                    "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "extra": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": true,
                        "properties": {
                            "known": {"type": "object", "properties": {"a": {"type": "string"}}}
                        }
                    },
                    "template": {
                        "type": "object",
                        "x-kubernetes-embedded-resource": true,
                        "x-kubernetes-preserve-unknown-fields": true
                    }
                }
            },
            "status": {
                "type": "object",
                "properties": {
                    "phase": {"type": "string"},
                    "readyReplicas": {"type": "integer"}
                }
            }
        }
    })
}

/// A valid, fully defaulted object.
fn valid() -> Value {
    let mut obj = json!({
        "apiVersion": "example.com/v1",
        "kind": "Model",
        "metadata": {"name": "m1"},
        "spec": {
            "modelName": "llama",
            "image": "registry/llama:1",
            "nodePools": [
                {"name": "cpu", "replicas": 2},
                {"name": "gpu", "gpu": {"count": 1}}
            ],
            "tags": ["a", "b"],
            "labels": {"team": "ml"}
        }
    });
    apply_defaults(&fixture(), &mut obj);
    obj
}

fn errors_for(obj: &Value) -> Vec<String> {
    validate(&fixture(), obj, None)
        .iter()
        .map(FieldError::to_string_with_field)
        .collect()
}

fn with_spec(field: &str, value: Value) -> Value {
    let mut obj = valid();
    obj["spec"][field] = value;
    obj
}

#[test]
fn to_string_with_field_prefixes_the_path() {
    let e = FieldError {
        field: "spec.replicas".into(),
        reason: REASON_INVALID,
        message: "Invalid value: -1: spec.replicas in body should be greater than or equal to 0"
            .into(),
    };
    assert_eq!(
        e.to_string_with_field(),
        "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0"
    );
    assert_eq!(e.to_string(), e.to_string_with_field());
}

#[test]
fn prune_reports_and_removes_unknown_fields() {
    let mut obj = json!({
        "apiVersion": "example.com/v1",
        "kind": "Model",
        "metadata": {"name": "m1", "whatever": 1},
        "junk": true,
        "spec": {
            "modelName": "llama",
            "bogus": 1,
            "nodePools": [{"name": "cpu", "extra": "x", "gpu": {"count": 1, "vendor": "n"}}],
            "env": {"A": {"value": "1", "bad": 2}},
            "config": {"anything": {"goes": [1, 2]}},
            "extra": {"free": 1, "known": {"a": "x", "zzz": 2}},
            "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"x": 1}}
        },
        "status": {"phase": "Ready", "foo": 1}
    });
    let dropped = prune(&fixture(), &mut obj);
    assert_eq!(
        dropped,
        vec![
            "junk",
            "spec.bogus",
            "spec.env[A].bad",
            "spec.extra.known.zzz",
            "spec.nodePools[0].extra",
            "spec.nodePools[0].gpu.vendor",
            "status.foo",
        ]
    );
    assert_eq!(
        obj,
        json!({
            "apiVersion": "example.com/v1",
            "kind": "Model",
            "metadata": {"name": "m1", "whatever": 1},
            "spec": {
                "modelName": "llama",
                "nodePools": [{"name": "cpu", "gpu": {"count": 1}}],
                "env": {"A": {"value": "1"}},
                "config": {"anything": {"goes": [1, 2]}},
                "extra": {"free": 1, "known": {"a": "x"}},
                "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"x": 1}}
            },
            "status": {"phase": "Ready"}
        })
    );
}

#[test]
fn prune_drops_non_nullable_nulls_silently() {
    let mut obj = json!({
        "spec": {"modelName": "m", "image": null, "description": null, "labels": {"a": null}}
    });
    let dropped = prune(&fixture(), &mut obj);
    assert!(dropped.is_empty(), "{dropped:?}");
    assert_eq!(
        obj,
        json!({"spec": {"modelName": "m", "description": null, "labels": {}}})
    );
}

#[test]
fn prune_leaves_wrong_types_for_validation() {
    let mut obj = json!({"spec": {"nodePools": "nope", "labels": [1]}});
    assert!(prune(&fixture(), &mut obj).is_empty());
    assert_eq!(obj, json!({"spec": {"nodePools": "nope", "labels": [1]}}));
}

#[test]
fn defaults_fill_nested_list_item_and_map_value_fields() {
    let mut obj = json!({
        "spec": {
            "modelName": "m",
            "port": 9000,
            "nodePools": [{"name": "a"}, {"name": "b", "replicas": 5, "gpu": {}}],
            "env": {"A": {"value": "1"}, "B": {"secret": true}}
        }
    });
    apply_defaults(&fixture(), &mut obj);
    assert_eq!(
        obj["spec"],
        json!({
            "modelName": "m",
            "port": 9000,
            "runtime": "deepaas",
            "maxSurge": "25%",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
            "nodePools": [
                {"name": "a", "replicas": 1},
                {"name": "b", "replicas": 5, "gpu": {"count": 0, "model": "any"}}
            ],
            "env": {"A": {"value": "1", "secret": false}, "B": {"secret": true}}
        })
    );
    // Absent objects without a default are not invented.
    assert!(obj.get("status").is_none());
    assert!(obj["spec"].get("labels").is_none());
}

#[test]
fn defaults_replace_non_nullable_nulls_but_keep_nullable_ones() {
    let mut obj = json!({"spec": {"runtime": null, "description": null}});
    apply_defaults(&fixture(), &mut obj);
    assert_eq!(obj["spec"]["runtime"], json!("deepaas"));
    assert_eq!(obj["spec"]["description"], Value::Null);
}

#[test]
fn valid_object_has_no_errors() {
    assert_eq!(errors_for(&valid()), Vec::<String>::new());
    // The fixture itself is structural.
    assert_eq!(check_structural(&fixture()), Vec::<String>::new());
}

#[test]
fn required_fields() {
    let mut obj = valid();
    obj["spec"].as_object_mut().unwrap().remove("modelName");
    obj["spec"]["nodePools"][1]
        .as_object_mut()
        .unwrap()
        .remove("name");
    let errs = validate(&fixture(), &obj, None);
    assert_eq!(errs[0].field, "spec.nodePools[1].name");
    assert_eq!(errs[0].reason, REASON_REQUIRED);
    assert_eq!(errs[0].message, "Required value");
    assert_eq!(
        errs[1].to_string_with_field(),
        "spec.modelName: Required value"
    );
}

#[test]
fn type_errors() {
    let errs = validate(&fixture(), &with_spec("port", json!("80")), None);
    assert_eq!(errs[0].reason, REASON_TYPE_INVALID);
    assert_eq!(
        errs[0].to_string_with_field(),
        r#"spec.port: Invalid value: "string": spec.port in body must be of type integer: "string""#
    );
    assert_eq!(
        errors_for(&with_spec("nodePools", json!({"name": "x"})))[0],
        r#"spec.nodePools: Invalid value: "object": spec.nodePools in body must be of type array: "object""#
    );
    // Whole-number floats are integers; fractional ones are numbers.
    assert!(errors_for(&with_spec("port", json!(80.0))).is_empty());
    assert_eq!(
        errors_for(&with_spec("port", json!(80.5)))[0],
        r#"spec.port: Invalid value: "number": spec.port in body must be of type integer: "number""#
    );
}

#[test]
fn nullable_and_non_nullable_nulls() {
    assert!(errors_for(&with_spec("description", Value::Null)).is_empty());
    assert_eq!(
        errors_for(&with_spec("modelRef", Value::Null))[0],
        r#"spec.modelRef: Invalid value: "null": spec.modelRef in body must be of type string: "null""#
    );
}

#[test]
fn enum_violation() {
    let errs = validate(&fixture(), &with_spec("runtime", json!("grpc")), None);
    assert_eq!(errs[0].reason, REASON_NOT_SUPPORTED);
    assert_eq!(
        errs[0].to_string_with_field(),
        r#"spec.runtime: Unsupported value: "grpc": supported values: "deepaas", "custom""#
    );
}

#[test]
fn minimum_and_maximum() {
    let errs = validate(&fixture(), &with_spec("port", json!(0)), None);
    assert_eq!(errs[0].reason, REASON_INVALID);
    assert_eq!(
        errs[0].to_string_with_field(),
        "spec.port: Invalid value: 0: spec.port in body should be greater than or equal to 1"
    );
    assert_eq!(
        errors_for(&with_spec("port", json!(65536)))[0],
        "spec.port: Invalid value: 65536: spec.port in body should be less than or equal to 65535"
    );
    assert!(errors_for(&with_spec("port", json!(65535))).is_empty());
}

#[test]
fn exclusive_bounds_and_float_formatting() {
    let schema = json!({"type": "object", "properties": {
        "ratio": {"type": "number", "minimum": 0.5, "maximum": 1000000, "exclusiveMaximum": true},
        "step": {"type": "number", "multipleOf": 0.25}
    }});
    let msgs = |v: Value| -> Vec<String> {
        validate(&schema, &v, None)
            .iter()
            .map(FieldError::to_string_with_field)
            .collect()
    };
    assert_eq!(
        msgs(json!({"ratio": 0.25})),
        vec!["ratio: Invalid value: 0.25: ratio in body should be greater than or equal to 0.5"]
    );
    assert_eq!(
        msgs(json!({"ratio": 1000000.0})),
        vec!["ratio: Invalid value: 1e+06: ratio in body should be less than 1e+06"]
    );
    assert!(msgs(json!({"ratio": 999999.5, "step": 1.75})).is_empty());
    assert_eq!(
        msgs(json!({"step": 0.3})),
        vec!["step: Invalid value: 0.3: step in body should be a multiple of 0.25"]
    );
}

#[test]
fn string_lengths_count_characters() {
    let errs = validate(
        &fixture(),
        &with_spec("modelName", json!("x".repeat(64))),
        None,
    );
    assert_eq!(errs[0].reason, REASON_TOO_LONG);
    assert_eq!(
        errs[0].to_string_with_field(),
        "spec.modelName: Too long: may not be more than 63 bytes"
    );
    // 63 two-byte characters are 63 characters.
    assert!(errors_for(&with_spec("modelName", json!("é".repeat(63)))).is_empty());
    let errs = validate(&fixture(), &with_spec("modelName", json!("")), None);
    assert_eq!(errs[0].reason, REASON_INVALID);
    assert_eq!(
        errs[0].to_string_with_field(),
        r#"spec.modelName: Invalid value: "": spec.modelName in body should be at least 1 chars long"#
    );
}

#[test]
fn pattern_in_list_item() {
    let mut obj = valid();
    obj["spec"]["nodePools"][0]["name"] = json!("GPU_pool");
    let errs = validate(&fixture(), &obj, None);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].reason, REASON_INVALID);
    assert_eq!(
        errs[0].to_string_with_field(),
        format!(
            r#"spec.nodePools[0].name: Invalid value: "GPU_pool": spec.nodePools[0].name in body should match '{NAME_PATTERN}'"#
        )
    );
}

#[test]
fn item_counts() {
    let pools: Vec<Value> = (0..33)
        .map(|i| json!({"name": format!("p{i}"), "replicas": 1}))
        .collect();
    let errs = validate(
        &fixture(),
        &with_spec("nodePools", Value::Array(pools)),
        None,
    );
    assert_eq!(errs[0].reason, REASON_TOO_MANY);
    assert_eq!(
        errs[0].to_string_with_field(),
        "spec.nodePools: Too many: 33: must have at most 32 items"
    );
    let errs = validate(&fixture(), &with_spec("nodePools", json!([])), None);
    assert_eq!(errs[0].reason, REASON_INVALID);
    assert_eq!(
        errs[0].to_string_with_field(),
        "spec.nodePools: Invalid value: 0: spec.nodePools in body should have at least 1 items"
    );
}

#[test]
fn list_map_duplicate_keys_and_set_duplicates() {
    let mut obj = valid();
    obj["spec"]["nodePools"][1]["name"] = json!("cpu");
    let errs = validate(&fixture(), &obj, None);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].reason, REASON_DUPLICATE);
    assert_eq!(
        errs[0].to_string_with_field(),
        r#"spec.nodePools[1]: Duplicate value: {"name":"cpu"}"#
    );
    let errs = validate(&fixture(), &with_spec("tags", json!(["a", "b", "a"])), None);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].reason, REASON_DUPLICATE);
    assert_eq!(
        errs[0].to_string_with_field(),
        r#"spec.tags[2]: Duplicate value: "a""#
    );
}

#[test]
fn map_values_use_key_paths() {
    let errs = validate(
        &fixture(),
        &with_spec("labels", json!({"team": "x".repeat(11), "ok": "y"})),
        None,
    );
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[1].field, CEL_SKIPPED_FIELD);
    assert_eq!(
        errs[0].to_string_with_field(),
        "spec.labels[team]: Too long: may not be more than 10 bytes"
    );
    assert_eq!(
        errors_for(&with_spec("labels", json!({"n": 1})))[0],
        r#"spec.labels[n]: Invalid value: "integer": spec.labels[n] in body must be of type string: "integer""#
    );
}

#[test]
fn int_or_string() {
    assert!(errors_for(&with_spec("maxSurge", json!(3))).is_empty());
    assert!(errors_for(&with_spec("maxSurge", json!("50%"))).is_empty());
    assert_eq!(
        errors_for(&with_spec("maxSurge", json!(true)))[0],
        r#"spec.maxSurge: Invalid value: "boolean": spec.maxSurge in body must be of type integer,string: "boolean""#
    );
}

#[test]
fn int32_format_range() {
    assert!(errors_for(&with_spec("timeoutSeconds", json!(2147483647))).is_empty());
    assert_eq!(
        errors_for(&with_spec("timeoutSeconds", json!(2147483648_i64)))[0],
        "spec.timeoutSeconds: Invalid value: 2147483648: Checked value must be of type integer with format int32 in spec.timeoutSeconds"
    );
}

#[test]
fn string_formats() {
    let schema = json!({"type": "object", "properties": {
        "when": {"type": "string", "format": "date-time"},
        "ip": {"type": "string", "format": "ipv4"},
        "net": {"type": "string", "format": "cidr"},
        "id": {"type": "string", "format": "uuid"},
        "any": {"type": "string", "format": "not-a-known-format"}
    }});
    let ok = json!({
        "when": "2024-05-01T10:00:00Z", "ip": "10.0.0.1", "net": "10.0.0.0/8",
        "id": "123e4567-e89b-12d3-a456-426614174000", "any": "whatever"
    });
    assert!(validate(&schema, &ok, None).is_empty());
    let errs = validate(
        &schema,
        &json!({"when": "yesterday", "net": "10.0.0.0/33"}),
        None,
    );
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].reason, REASON_TYPE_INVALID);
    assert_eq!(
        errs[1].to_string_with_field(),
        r#"when: Invalid value: "yesterday": when in body must be of type date-time: "yesterday""#
    );
    assert_eq!(errs[0].field, "net");
}

#[test]
fn embedded_resource_needs_api_version_and_kind() {
    assert!(
        errors_for(&with_spec(
            "template",
            json!({"apiVersion": "v1", "kind": "Pod", "x": 1})
        ))
        .is_empty()
    );
    assert_eq!(
        errors_for(&with_spec("template", json!({"kind": "Pod"})))[0],
        "spec.template.apiVersion: Required value: must not be empty"
    );
}

#[test]
fn min_and_max_properties() {
    let schema = json!({"type": "object", "properties": {
        "m": {"type": "object", "minProperties": 1, "maxProperties": 2,
              "additionalProperties": {"type": "string"}}
    }});
    let msgs = |v: Value| -> Vec<String> {
        validate(&schema, &v, None)
            .iter()
            .map(FieldError::to_string_with_field)
            .collect()
    };
    assert_eq!(
        msgs(json!({"m": {}})),
        vec!["m: Invalid value: 0: m in body should have at least 1 properties"]
    );
    assert_eq!(
        msgs(json!({"m": {"a": "", "b": "", "c": ""}})),
        vec!["m: Too many: 3: must have at most 2 items"]
    );
}

#[test]
fn one_of_required_alternatives() {
    let schema = json!({"type": "object", "properties": {"s": {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
        "oneOf": [{"required": ["a"]}, {"required": ["b"]}]
    }}});
    assert!(validate(&schema, &json!({"s": {"a": "x"}}), None).is_empty());
    let errs = validate(&schema, &json!({"s": {"a": "x", "b": "y"}}), None);
    assert_eq!(
        errs[0].to_string_with_field(),
        r#"s: Invalid value: "object": s must validate one and only one schema (oneOf). Found 2 valid alternatives"#
    );
}

#[test]
fn cel_cross_field_rule_at_object_level() {
    let mut obj = valid();
    obj["spec"]["modelRef"] = json!("hub/llama");
    let errs = validate(&fixture(), &obj, None);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].reason, REASON_INVALID);
    assert_eq!(
        errs[0].to_string_with_field(),
        r#"spec: Invalid value: "object": exactly one of image or modelRef must be set"#
    );
    obj["spec"].as_object_mut().unwrap().remove("modelRef");
    obj["spec"].as_object_mut().unwrap().remove("image");
    assert_eq!(
        errors_for(&obj),
        vec![r#"spec: Invalid value: "object": exactly one of image or modelRef must be set"#]
    );
}

#[test]
fn cel_field_rule_in_list_item() {
    let mut obj = valid();
    obj["spec"]["nodePools"][1]["replicas"] = json!(101);
    assert_eq!(
        errors_for(&obj),
        vec![
            r#"spec.nodePools[1].replicas: Invalid value: "integer": replicas must be at most 100"#
        ]
    );
}

#[test]
fn cel_skipped_while_blocking_errors_exist() {
    let mut obj = valid();
    obj["spec"].as_object_mut().unwrap().remove("image"); // CEL rule would fail
    obj["spec"]["runtime"] = json!("grpc");
    let errs = errors_for(&obj);
    assert_eq!(
        errs,
        vec![
            r#"spec.runtime: Unsupported value: "grpc": supported values: "deepaas", "custom""#
                .to_string(),
            format!("<nil>: {CEL_SKIPPED_MESSAGE}"),
        ]
    );
}

#[test]
fn cel_runs_alongside_non_blocking_errors() {
    let mut obj = valid();
    obj["spec"].as_object_mut().unwrap().remove("image");
    obj["spec"]["port"] = json!(0);
    assert_eq!(
        errors_for(&obj),
        vec![
            "spec.port: Invalid value: 0: spec.port in body should be greater than or equal to 1",
            r#"spec: Invalid value: "object": exactly one of image or modelRef must be set"#,
        ]
    );
}

#[test]
fn old_self_rule_only_on_update() {
    let schema = fixture();
    let old = valid();
    let mut renamed = valid();
    renamed["spec"]["modelName"] = json!("mistral");
    // Create: the transition rule is not evaluated.
    assert!(validate(&schema, &renamed, None).is_empty());
    // Unchanged update passes.
    assert!(validate(&schema, &old, Some(&old)).is_empty());
    let errs = validate(&schema, &renamed, Some(&old));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].field, "spec.modelName");
    assert_eq!(errs[0].reason, REASON_INVALID);
    assert_eq!(
        errs[0].message,
        r#"Invalid value: "string": modelName is immutable"#
    );
}

#[test]
fn old_self_in_list_map_items_correlates_by_key() {
    let schema = fixture();
    let old = valid();
    let mut reordered = valid();
    reordered["spec"]["nodePools"]
        .as_array_mut()
        .unwrap()
        .reverse();
    assert!(validate(&schema, &reordered, Some(&old)).is_empty());

    reordered["spec"]["nodePools"][0]["gpu"]["count"] = json!(2);
    assert_eq!(
        validate(&schema, &reordered, Some(&old))
            .iter()
            .map(FieldError::to_string_with_field)
            .collect::<Vec<_>>(),
        vec![r#"spec.nodePools[0].gpu: Invalid value: "object": gpu is immutable"#]
    );
    // A new pool has no old value, so its transition rule does not run.
    let mut added = valid();
    added["spec"]["nodePools"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "new", "replicas": 1, "gpu": {"count": 4, "model": "x"}}));
    assert!(validate(&schema, &added, Some(&old)).is_empty());
}

#[test]
fn old_self_in_atomic_list_items_is_not_evaluated() {
    let schema = json!({"type": "object", "properties": {"steps": {
        "type": "array",
        "items": {"type": "string", "x-kubernetes-validations": [
            {"rule": "self == oldSelf", "message": "step is immutable"}
        ]},
        "x-kubernetes-validations": [
            {"rule": "size(self) >= size(oldSelf)", "message": "steps may not be removed"}
        ]
    }}});
    let old = json!({"steps": ["a", "b"]});
    // Items have no identity, so changing them is not a transition; the list itself is.
    assert!(validate(&schema, &json!({"steps": ["b", "c"]}), Some(&old)).is_empty());
    let errs = validate(&schema, &json!({"steps": ["a"]}), Some(&old));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(
        errs[0].to_string_with_field(),
        r#"steps: Invalid value: "array": steps may not be removed"#
    );
}

#[test]
fn cel_default_message_field_path_and_reason() {
    let schema = json!({"type": "object", "properties": {"spec": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "x-kubernetes-validations": [
            {"rule": "self.a < self.b"},
            {"rule": "self.a != 0", "message": "a must not be zero", "fieldPath": ".a", "reason": "FieldValueForbidden"}
        ]
    }}});
    let errs = validate(&schema, &json!({"spec": {"a": 0, "b": 0}}), None);
    assert_eq!(
        errs,
        vec![
            FieldError {
                field: "spec".into(),
                reason: REASON_INVALID,
                message: r#"Invalid value: "object": failed rule: self.a < self.b"#.into(),
            },
            FieldError {
                field: "spec.a".into(),
                reason: REASON_FORBIDDEN,
                message: "Forbidden: a must not be zero".into(),
            },
        ]
    );
}

#[test]
fn cel_rules_on_map_values_use_key_paths() {
    let schema = json!({"type": "object", "properties": {"m": {
        "type": "object",
        "additionalProperties": {"type": "string", "x-kubernetes-validations": [
            {"rule": "self.startsWith('v')", "message": "must start with v"}
        ]}
    }}});
    let errs = validate(&schema, &json!({"m": {"ok": "v1", "bad": "x"}}), None);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(
        errs[0].to_string_with_field(),
        r#"m[bad]: Invalid value: "string": must start with v"#
    );
}

#[test]
fn check_structural_flags_missing_type_and_bad_rule() {
    let mut schema = fixture();
    schema["properties"]["spec"]["properties"]["untyped"] = json!({"description": "no type"});
    schema["properties"]["spec"]["properties"]["nodePools"]["items"]["x-kubernetes-validations"] =
        json!([{"rule": "self.name ==", "message": "broken"}]);
    let problems = check_structural(&schema);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with(
            "openAPIV3Schema.properties[spec].properties[nodePools].items.x-kubernetes-validations[0].rule: \
             Invalid value: \"self.name ==\": compilation failed: ERROR: <input>:1:13: Syntax error"
        ),
        "{}",
        problems[0]
    );
    assert_eq!(
        problems[1],
        "openAPIV3Schema.properties[spec].properties[untyped].type: Required value: must not be empty for specified object fields"
    );
}

#[test]
fn check_structural_other_problems() {
    let schema = json!({"type": "object", "properties": {
        "list": {"type": "array"},
        "pools": {"type": "array", "x-kubernetes-list-type": "map",
                  "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
        "tags": {"type": "array", "items": {"type": "string", "x-kubernetes-validations": [
            {"rule": "self == oldSelf"}
        ]}},
        "port": {"type": "integer", "default": "http"},
        "limits": {"type": "object", "default": {}, "required": ["cpu"],
                   "properties": {"cpu": {"type": "string", "default": "1"}}},
        "name": {"type": "string", "pattern": "("}
    }});
    let problems = check_structural(&schema);
    let has = |needle: &str| problems.iter().any(|p| p.starts_with(needle));
    assert!(
        has("openAPIV3Schema.properties[list].items: Required value: must be specified"),
        "{problems:?}"
    );
    assert!(
        has("openAPIV3Schema.properties[pools].x-kubernetes-list-map-keys: Required value"),
        "{problems:?}"
    );
    assert!(
        has(
            "openAPIV3Schema.properties[tags].items.x-kubernetes-validations[0].rule: Invalid value: \"self == oldSelf\": oldSelf cannot be used on the uncorrelatable portion of the schema within openAPIV3Schema.properties[tags]"
        ),
        "{problems:?}"
    );
    assert!(
        has(
            "openAPIV3Schema.properties[port].default: Invalid value: \"string\": default in body must be of type integer"
        ),
        "{problems:?}"
    );
    assert!(
        has(
            "openAPIV3Schema.properties[name].pattern: Invalid value: \"(\": must be a valid regular expression"
        ),
        "{problems:?}"
    );
    assert_eq!(problems.len(), 5, "{problems:?}");
    assert_eq!(
        check_structural(&json!({"type": "string"})),
        vec![r#"openAPIV3Schema.type: Invalid value: "string": must be object at the root"#]
    );
}

#[test]
fn go_style_value_rendering() {
    assert_eq!(go_float(1e6), "1e+06");
    assert_eq!(go_float(123456.0), "123456");
    assert_eq!(go_float(0.5), "0.5");
    assert_eq!(go_float(0.00001), "1e-05");
    assert_eq!(go_quote("a\"b\n"), r#""a\"b\n""#);
    assert_eq!(render(&json!({"name": "cpu"})), r#"{"name":"cpu"}"#);
    assert_eq!(render(&json!(3)), "3");
}

#[test]
fn an_update_that_leaves_a_value_unchanged_does_not_validate_it_again_except_with_transition_rules()
{
    let schema = json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "note": {"type": "string"},
                    "replicas": {
                        "type": "integer",
                        "x-kubernetes-validations": [{"rule": "self <= 100", "message": "at most 100"}]
                    },
                    "epoch": {
                        "type": "integer",
                        "x-kubernetes-validations": [{"rule": "self > oldSelf", "message": "epoch must grow"}]
                    }
                }
            }
        }
    });
    // Stored before the rule existed: 200 replicas.
    let old = json!({"spec": {"replicas": 200, "note": "a"}});
    let messages = |obj: &Value, old: Option<&Value>| -> Vec<String> {
        validate(&schema, obj, old)
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    };
    // Unchanged replicas: ratcheted, not checked again.
    assert_eq!(
        messages(&json!({"spec": {"replicas": 200, "note": "b"}}), Some(&old)),
        Vec::<String>::new()
    );
    // A new value is checked, and so is a create.
    assert_eq!(
        messages(&json!({"spec": {"replicas": 150, "note": "a"}}), Some(&old)),
        ["spec.replicas: Invalid value: \"integer\": at most 100"]
    );
    assert_eq!(
        messages(&json!({"spec": {"replicas": 200}}), None),
        ["spec.replicas: Invalid value: \"integer\": at most 100"]
    );
    // A transition rule runs on an unchanged value too.
    let old = json!({"spec": {"epoch": 3, "note": "a"}});
    assert_eq!(
        messages(&json!({"spec": {"epoch": 3, "note": "b"}}), Some(&old)),
        ["spec.epoch: Invalid value: \"integer\": epoch must grow"]
    );
}

#[test]
fn rules_convert_only_the_fields_of_self_they_read() {
    let rules = |exprs: &[&str]| -> Vec<Value> {
        exprs
            .iter()
            .map(|r| json!({"rule": r, "messageExpression": "'bad ' + self.kind"}))
            .collect()
    };
    let read = |exprs: &[&str]| fields_read(&rules(exprs)).map(|r| r.cut(&full()));
    fn full() -> Value {
        json!({
            "kind": "K",
            "metadata": {"name": "a", "managedFields": [{"manager": "m"}]},
            "spec": {"x": {"y": 1}, "list": [1, 2]},
            "status": {"ready": true}
        })
    }
    assert_eq!(
        read(&[
            "self.metadata.name.size() <= 63",
            "has(self.spec.x) && myself == 1"
        ]),
        Some(json!({"kind": "K", "metadata": {"name": "a"}, "spec": {"x": {"y": 1}}}))
    );
    assert_eq!(
        read(&[
            "self.spec.list[0] == 1 && self.spec.x.y == 1",
            "has(self.spec)"
        ]),
        Some(json!({"kind": "K", "spec": {"x": {"y": 1}, "list": [1, 2]}}))
    );
    // Anything but a plain field read converts the whole value.
    for whole in [
        "size(self) > 0",
        "self['metadata'].name != ''",
        "self.__namespace__ == 'a'",
        "self == oldSelf",
        "self.size() > 0",
        "self .spec == 1",
        "self.size() > 0",
    ] {
        assert_eq!(read(&[whole]), None, "{whole}");
    }

    // The outcome is the same as with the whole value: a root rule on the name, with
    // a status it does not read, and a rule reading the whole object beside it.
    let schema = json!({
        "type": "object",
        "x-kubernetes-validations": [
            {"rule": "self.metadata.name.size() <= 5", "messageExpression": "'name ' + self.metadata.name + ' is long'"},
        ],
        "properties": {
            "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "spec": {
                "type": "object",
                "x-kubernetes-validations": [{"rule": "size(self) == 1", "message": "one field"}],
                "x-kubernetes-preserve-unknown-fields": true
            }
        }
    });
    let messages = |obj: &Value| -> Vec<String> {
        validate(&schema, obj, None)
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    };
    let status = json!({"conditions": [{"type": "Ready", "status": "True"}]});
    assert_eq!(
        messages(
            &json!({"metadata": {"name": "toolong"}, "spec": {"a": 1, "b": 2}, "status": status})
        ),
        [
            ": Invalid value: \"object\": name toolong is long",
            "spec: Invalid value: \"object\": one field"
        ]
    );
    assert_eq!(
        messages(&json!({"metadata": {"name": "ok"}, "spec": {"a": 1}, "status": status})),
        Vec::<String>::new()
    );
}
