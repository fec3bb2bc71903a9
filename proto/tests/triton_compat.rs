//! Wire compatibility with Triton Inference Server, checked against the real
//! thing: the descriptors embedded in the `tritonclient` wheel, which
//! `scripts/fetch-triton-descriptors.sh` extracts into `.cache/protos/`.
//!
//! - The service `inference.GRPCInferenceService` has exactly Triton's
//!   methods, with the same request and response types and streaming flags.
//! - Every message and enum reachable from the service (through fields, map
//!   entries included) is identical to Triton's: the same fields (name,
//!   number, type, label, type name, oneof), oneofs, nested types, map-entry
//!   flags and enum values.
//! - The `inference.ModelConfig` subtree may be a subset: every field and
//!   enum value we define exists in Triton's with the same name, number,
//!   type, label, type name and oneof.
//! - Every message and enum we define is covered by one of the checks above.
//!
//! Without the cached descriptors the test fails: it never skips.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use openmodel_proto::inference::FILE_DESCRIPTOR_SET;
use prost::Message;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
    FileDescriptorSet, ServiceDescriptorProto,
    field_descriptor_proto::{Label, Type},
};

/// The service both sides define.
const SERVICE: &str = "GRPCInferenceService";
/// The message whose subtree may be a subset of Triton's.
const MODEL_CONFIG: &str = ".inference.ModelConfig";

/// Triton's descriptors, as written by the fetch script.
const TRITON_FILES: &[&str] = &["triton_grpc_service.pb", "triton_model_config.pb"];

fn triton_descriptors() -> Vec<FileDescriptorProto> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("proto/ sits in the workspace")
        .join(".cache/protos");
    TRITON_FILES
        .iter()
        .map(|name| {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "Triton's descriptor {} is missing ({e}): run scripts/fetch-triton-descriptors.sh",
                    path.display()
                )
            });
            FileDescriptorProto::decode(bytes.as_slice()).unwrap_or_else(|e| {
                panic!(
                    "{} is not a FileDescriptorProto ({e}): delete .cache/protos and run scripts/fetch-triton-descriptors.sh",
                    path.display()
                )
            })
        })
        .collect()
}

fn our_descriptors() -> Vec<FileDescriptorProto> {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
        .expect("FILE_DESCRIPTOR_SET decodes")
        .file
}

/// Every message and enum of a set of files, by fully qualified name
/// (".inference.Outer.Inner"), and the services.
#[derive(Default)]
struct Index<'a> {
    messages: BTreeMap<String, &'a DescriptorProto>,
    enums: BTreeMap<String, &'a EnumDescriptorProto>,
    services: BTreeMap<String, &'a ServiceDescriptorProto>,
}

impl<'a> Index<'a> {
    fn new(files: &'a [FileDescriptorProto]) -> Self {
        let mut index = Index::default();
        for file in files {
            let prefix = format!(".{}", file.package());
            for message in &file.message_type {
                index.add_message(&prefix, message);
            }
            for e in &file.enum_type {
                index.enums.insert(format!("{prefix}.{}", e.name()), e);
            }
            for service in &file.service {
                index
                    .services
                    .insert(format!("{prefix}.{}", service.name()), service);
            }
        }
        index
    }

    fn add_message(&mut self, prefix: &str, message: &'a DescriptorProto) {
        let name = format!("{prefix}.{}", message.name());
        for nested in &message.nested_type {
            self.add_message(&name, nested);
        }
        for e in &message.enum_type {
            self.enums.insert(format!("{name}.{}", e.name()), e);
        }
        self.messages.insert(name, message);
    }

    fn service(&self) -> &'a ServiceDescriptorProto {
        let name = format!(".inference.{SERVICE}");
        self.services
            .get(&name)
            .unwrap_or_else(|| panic!("service {name} not found"))
    }
}

/// The comparable facts of one field.
#[derive(Debug, PartialEq)]
struct FieldFacts<'a> {
    name: &'a str,
    number: i32,
    r#type: Type,
    label: Label,
    type_name: &'a str,
    oneof: Option<&'a str>,
    proto3_optional: bool,
}

fn field_facts<'a>(
    message: &'a DescriptorProto,
    field: &'a FieldDescriptorProto,
) -> FieldFacts<'a> {
    FieldFacts {
        name: field.name(),
        number: field.number(),
        r#type: field.r#type(),
        label: field.label(),
        type_name: field.type_name(),
        oneof: field
            .oneof_index
            .map(|i| message.oneof_decl[i as usize].name()),
        proto3_optional: field.proto3_optional(),
    }
}

/// The message and enum types a message's fields refer to.
fn referenced_types(message: &DescriptorProto) -> impl Iterator<Item = &str> {
    message
        .field
        .iter()
        .filter(|f| f.type_name.is_some())
        .map(|f| f.type_name())
}

fn is_map_entry(message: &DescriptorProto) -> bool {
    message.options.as_ref().is_some_and(|o| o.map_entry())
}

/// Checks that `ours` is identical to `theirs`; pushes every difference.
fn compare_message(
    name: &str,
    ours: &DescriptorProto,
    theirs: &DescriptorProto,
    errors: &mut Vec<String>,
) {
    let facts = |m: &DescriptorProto| -> Vec<String> {
        let mut v: Vec<_> = m
            .field
            .iter()
            .map(|f| format!("{:?}", field_facts(m, f)))
            .collect();
        v.sort();
        v
    };
    let (our_fields, their_fields) = (facts(ours), facts(theirs));
    for f in &our_fields {
        if !their_fields.contains(f) {
            errors.push(format!("{name}: our field {f} is not Triton's"));
        }
    }
    for f in &their_fields {
        if !our_fields.contains(f) {
            errors.push(format!(
                "{name}: Triton's field {f} is missing or different here"
            ));
        }
    }
    // With the oneof names of the fields, this pins each field's oneof index.
    let oneofs = |m: &DescriptorProto| {
        m.oneof_decl
            .iter()
            .map(|o| o.name().to_owned())
            .collect::<Vec<_>>()
    };
    if oneofs(ours) != oneofs(theirs) {
        errors.push(format!(
            "{name}: oneofs {:?}, Triton has {:?}",
            oneofs(ours),
            oneofs(theirs)
        ));
    }
    let nested = |m: &DescriptorProto| {
        (
            m.nested_type
                .iter()
                .map(|n| n.name().to_owned())
                .collect::<BTreeSet<_>>(),
            m.enum_type
                .iter()
                .map(|e| e.name().to_owned())
                .collect::<BTreeSet<_>>(),
        )
    };
    if nested(ours) != nested(theirs) {
        errors.push(format!(
            "{name}: nested types {:?}, Triton has {:?}",
            nested(ours),
            nested(theirs)
        ));
    }
    if is_map_entry(ours) != is_map_entry(theirs) {
        errors.push(format!("{name}: map_entry differs from Triton's"));
    }
}

/// Checks that every field of `ours` is in `theirs`, identical.
fn compare_message_subset(
    name: &str,
    ours: &DescriptorProto,
    theirs: &DescriptorProto,
    errors: &mut Vec<String>,
) {
    for field in &ours.field {
        let mine = field_facts(ours, field);
        match theirs.field.iter().find(|f| f.number() == field.number()) {
            None => errors.push(format!(
                "{name}: Triton has no field number {}",
                field.number()
            )),
            Some(t) => {
                let triton = field_facts(theirs, t);
                if mine != triton {
                    errors.push(format!("{name}: ours {mine:?}, Triton's {triton:?}"));
                }
            }
        }
    }
    if is_map_entry(ours) != is_map_entry(theirs) {
        errors.push(format!("{name}: map_entry differs from Triton's"));
    }
}

fn enum_values(e: &EnumDescriptorProto) -> BTreeSet<(String, i32)> {
    e.value
        .iter()
        .map(|v| (v.name().to_owned(), v.number()))
        .collect()
}

/// What the walk over the type graph checked, for the coverage check.
#[derive(Default)]
struct Checked {
    messages: BTreeSet<String>,
    enums: BTreeSet<String>,
}

/// Walks our types from `roots` through field references; compares each
/// message and enum found with Triton's, fully or as a subset. With `stop`,
/// does not enter that message (it is checked by another walk).
fn walk(
    roots: impl IntoIterator<Item = String>,
    stop: Option<&str>,
    subset: bool,
    ours: &Index,
    theirs: &Index,
    checked: &mut Checked,
    errors: &mut Vec<String>,
) {
    let mut queue: VecDeque<String> = roots.into_iter().collect();
    while let Some(name) = queue.pop_front() {
        if Some(name.as_str()) == stop
            || checked.messages.contains(&name)
            || checked.enums.contains(&name)
        {
            continue;
        }
        if let Some(e) = ours.enums.get(&name) {
            checked.enums.insert(name.clone());
            let Some(t) = theirs.enums.get(&name) else {
                errors.push(format!("enum {name} does not exist in Triton"));
                continue;
            };
            let (mine, triton) = (enum_values(e), enum_values(t));
            if subset {
                for v in mine.difference(&triton) {
                    errors.push(format!("enum {name}: value {v:?} is not Triton's"));
                }
            } else if mine != triton {
                errors.push(format!(
                    "enum {name}: values {mine:?}, Triton has {triton:?}"
                ));
            }
            continue;
        }
        let Some(message) = ours.messages.get(&name) else {
            errors.push(format!("type {name} is referenced but not defined by us"));
            continue;
        };
        checked.messages.insert(name.clone());
        let Some(t) = theirs.messages.get(&name) else {
            errors.push(format!("message {name} does not exist in Triton"));
            continue;
        };
        if subset {
            compare_message_subset(&name, message, t, errors);
        } else {
            compare_message(&name, message, t, errors);
        }
        queue.extend(referenced_types(message).map(str::to_owned));
    }
}

#[test]
fn matches_tritons_grpc_service() {
    let (triton_files, our_files) = (triton_descriptors(), our_descriptors());
    let (theirs, ours) = (Index::new(&triton_files), Index::new(&our_files));
    let mut errors = Vec::new();

    // Files: the same names, package and imports, so reflection looks alike.
    for t in &triton_files {
        match our_files.iter().find(|o| o.name() == t.name()) {
            None => errors.push(format!("we have no file named {}", t.name())),
            Some(o) => {
                if (o.package(), &o.dependency) != (t.package(), &t.dependency) {
                    errors.push(format!(
                        "{}: package/imports {:?}, Triton has {:?}",
                        t.name(),
                        (o.package(), &o.dependency),
                        (t.package(), &t.dependency)
                    ));
                }
            }
        }
    }

    // The service: exactly the same methods.
    let method_facts = |s: &ServiceDescriptorProto| {
        s.method
            .iter()
            .map(|m| {
                (
                    m.name().to_owned(),
                    (
                        m.input_type().to_owned(),
                        m.output_type().to_owned(),
                        m.client_streaming(),
                        m.server_streaming(),
                    ),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    let (our_methods, their_methods) =
        (method_facts(ours.service()), method_facts(theirs.service()));
    for (name, facts) in &their_methods {
        match our_methods.get(name) {
            None => errors.push(format!("rpc {name} is missing")),
            Some(mine) if mine != facts => {
                errors.push(format!("rpc {name}: ours {mine:?}, Triton's {facts:?}"))
            }
            Some(_) => {}
        }
    }
    for name in our_methods.keys() {
        if !their_methods.contains_key(name) {
            errors.push(format!("rpc {name} is not Triton's"));
        }
    }
    assert_eq!(
        their_methods.len(),
        20,
        "Triton's service changed size: update the expectations"
    );

    // Every type reachable from the service, identical; ModelConfig's subtree, a subset.
    let mut checked = Checked::default();
    let roots = our_methods
        .values()
        .flat_map(|(input, output, _, _)| [input.clone(), output.clone()]);
    walk(
        roots,
        Some(MODEL_CONFIG),
        false,
        &ours,
        &theirs,
        &mut checked,
        &mut errors,
    );
    assert!(
        checked.messages.contains(".inference.ModelConfigResponse"),
        "the walk reached ModelConfigResponse"
    );
    walk(
        [MODEL_CONFIG.to_owned()],
        None,
        true,
        &ours,
        &theirs,
        &mut checked,
        &mut errors,
    );

    // Nothing we define escapes the checks.
    for name in ours.messages.keys() {
        if !checked.messages.contains(name) {
            errors.push(format!(
                "message {name} is not reachable from the service, so unchecked"
            ));
        }
    }
    for name in ours.enums.keys() {
        if !checked.enums.contains(name) {
            errors.push(format!(
                "enum {name} is not reachable from the service, so unchecked"
            ));
        }
    }

    assert!(
        errors.is_empty(),
        "our protos differ from Triton's ({} problems):\n{}",
        errors.len(),
        errors.join("\n")
    );
    // The walk really covered the protocol.
    assert!(
        checked.messages.len() > 50,
        "only {} messages checked",
        checked.messages.len()
    );
}
