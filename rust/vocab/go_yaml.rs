//! The YAML side of the engine's knobs in the Go component, generated:
//! `traceconsistencyprocessor/config_knobs_generated.go` holds the YAML-facing structs of the
//! knobs (fields named after the YAML key, `mapstructure` tags, the knob's doc as the
//! comment), `defaultEngineKnobs` (the engine's defaults) and `engineKnobs` (YAML →
//! `engine.Config`). A YAML section that also holds keys only the Go side uses (the top
//! level, `checks`, `handoff`) is written by hand and embeds the generated struct of its
//! engine knobs (`mapstructure:",squash"`); every other section is generated whole.

use std::fmt::Write as _;

use super::go::{camel, HEADER};
use super::*;

/// The sections written by hand (they hold Go-only keys too), with the generated struct of
/// their engine knobs that they embed.
const HAND_WRITTEN: &[(&str, &str)] = &[("", "EngineKnobs"), ("checks", "ChecksKnobs"), ("handoff", "HandoffKnobs")];

/// How a knob's YAML value becomes the engine's.
#[derive(Clone, Copy)]
enum Convert {
    /// A Go expression; `{v}` is the YAML field.
    Expr(&'static str),
    /// A Go call returning the value and an error; `{v}` is the YAML field.
    Fallible(&'static str),
    /// An enum string parsed with `engine.Parse<T>`.
    Enum,
}

/// A knob's YAML field: its Go type, the Go source of its default (`None`: left unset) and
/// its conversion.
struct Yaml {
    go_type: String,
    default: Option<String>,
    convert: Convert,
}

/// Knobs whose YAML field differs from the engine field: (YAML key, Go type, default or ""
/// for none, conversion).
const SPECIAL: &[(&str, &str, &str, Convert)] = &[
    ("num_shards", "int", "engine.DefaultNumShards", Convert::Fallible("numShards({v})")),
    ("checks.disabled", "[]string", "[]string{}", Convert::Fallible("checksDisabled({v})")),
    ("handoff.max_hops", "int", "engine.DefaultHandoffMaxHops", Convert::Expr("int64({v})")),
    ("handoff.key", "configopaque.String", "", Convert::Expr("string({v})")),
    // 0 (unset) picks the default bound lowered to max_buffered_bytes.
    ("wal.max_bytes", "int64", "", Convert::Expr("c.WAL.maxBytes(c.MaxBufferedBytes)")),
];

fn yaml_of(k: &Knob) -> Yaml {
    if let Some(&(_, t, d, c)) = SPECIAL.iter().find(|s| s.0 == k.yaml) {
        return Yaml { go_type: t.into(), default: (!d.is_empty()).then(|| d.to_string()), convert: c };
    }
    let (go_type, default, convert) = match k.kind {
        Kind::Enum { default, .. } => ("string".to_string(), Some(format!("engine.{}YAML", default(&Config::default()))), Convert::Enum),
        Kind::Str => ("string".into(), None, Convert::Expr("{v}")),
        kind => (super::go::go_type(kind).to_string(), Some(format!("engine.Default{}", k.go)), Convert::Expr("{v}")),
    };
    Yaml { go_type, default, convert }
}

/// The Go path of a YAML key below `c`: `checks.skew_correction.enabled` → `c.Checks.SkewCorrection.Enabled`.
fn go_path(yaml: &str) -> String {
    yaml.split('.').fold("c".to_string(), |p, s| format!("{p}.{}", camel(s)))
}

/// The generated struct of a section.
fn section_type(path: &str) -> String {
    HAND_WRITTEN.iter().find(|h| h.0 == path).map(|h| h.1.to_string()).unwrap_or_else(|| format!("{}Config", camel(path.rsplit('.').next().unwrap())))
}

/// The sections (dotted paths, "" the top level) in order of first appearance.
fn sections() -> Vec<String> {
    let mut out = vec![String::new()];
    for k in KNOBS {
        let segs: Vec<&str> = k.yaml.split('.').collect();
        for n in 1..segs.len() {
            let p = segs[..n].join(".");
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

fn parent(path: &str) -> &str {
    path.rsplit_once('.').map_or("", |p| p.0)
}

fn struct_of(o: &mut String, path: &str) {
    let ty = section_type(path);
    let hand = HAND_WRITTEN.iter().any(|h| h.0 == path);
    let key = if path.is_empty() { "the top level".to_string() } else { path.to_string() };
    if hand {
        let _ = writeln!(o, "\n// {ty} are the engine's keys of {key} (embedded, squashed, in its hand-written struct).");
    } else {
        let _ = writeln!(o, "\n// {ty} is the YAML section {path}.");
    }
    let _ = writeln!(o, "type {ty} struct {{");
    let mut fields: Vec<String> = Vec::new();
    let mut seen_sections: Vec<String> = Vec::new();
    for k in KNOBS {
        if parent(k.yaml) == path {
            let leaf = k.yaml.rsplit('.').next().unwrap();
            fields.push(format!("\t// {} ({}): {}.\n\t{} {} `mapstructure:\"{leaf}\"`\n", camel(leaf), k.yaml, k.doc, camel(leaf), yaml_of(k).go_type));
            continue;
        }
        // A knob further down: the subsection directly below path, when generated whole.
        let prefix = if path.is_empty() { String::new() } else { format!("{path}.") };
        let Some(rest) = k.yaml.strip_prefix(&prefix) else { continue };
        let sub = format!("{prefix}{}", rest.split('.').next().unwrap());
        if seen_sections.contains(&sub) || HAND_WRITTEN.iter().any(|h| h.0 == sub) {
            continue;
        }
        let leaf = sub.rsplit('.').next().unwrap();
        fields.push(format!("\t// {} is the section {sub}.\n\t{} {} `mapstructure:\"{leaf}\"`\n", camel(leaf), camel(leaf), section_type(&sub)));
        seen_sections.push(sub);
    }
    o.push_str(&fields.join("\n"));
    o.push_str("}\n");
}

pub(super) fn render_knobs() -> String {
    let mut o = String::new();
    o.push_str(HEADER);
    o.push_str("\npackage traceconsistencyprocessor\n\nimport (\n\t\"fmt\"\n\t\"time\"\n\n\t\"go.opentelemetry.io/collector/config/configopaque\"\n\n\t\"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/engine\"\n)\n");
    for s in sections() {
        struct_of(&mut o, &s);
    }

    o.push_str("\n// engineKeys are the YAML keys of the engine's knobs, in the order of rust/vocab.\nvar engineKeys = []string{\n");
    for k in KNOBS {
        let _ = writeln!(o, "\t{:?},", k.yaml);
    }
    o.push_str("}\n");

    o.push_str("\n// defaultEngineKnobs sets the engine's keys of cfg to the engine's defaults.\nfunc defaultEngineKnobs(cfg *Config) {\n");
    for k in KNOBS {
        if let Some(d) = yaml_of(k).default {
            let _ = writeln!(o, "\t{} = {d}", go_path(k.yaml).replacen('c', "cfg", 1));
        }
    }
    o.push_str("}\n");

    let any_fallible = KNOBS.iter().any(|k| matches!(yaml_of(k).convert, Convert::Fallible(_)));
    let any_enum = KNOBS.iter().any(|k| matches!(yaml_of(k).convert, Convert::Enum));
    o.push_str("\n// engineKnobs fills ec from the engine's keys of c. It fails on what cannot be translated:\n// an unknown enum string, or what the conversions of special keys refuse.\nfunc (c *Config) engineKnobs(ec *engine.Config) error {\n");
    if any_fallible {
        o.push_str("\tvar err error\n");
    }
    if any_enum {
        o.push_str("\tvar ok bool\n");
    }
    for k in KNOBS {
        let v = go_path(k.yaml);
        match yaml_of(k).convert {
            Convert::Expr(e) => {
                let _ = writeln!(o, "\tec.{} = {}", k.go, e.replace("{v}", &v));
            }
            Convert::Fallible(e) => {
                let _ = writeln!(o, "\tif ec.{}, err = {}; err != nil {{\n\t\treturn err\n\t}}", k.go, e.replace("{v}", &v));
            }
            Convert::Enum => {
                let Kind::Enum { go_type, yaml, .. } = k.kind else { unreachable!() };
                let _ = writeln!(
                    o,
                    "\tif ec.{}, ok = engine.Parse{go_type}({v}); !ok {{\n\t\treturn fmt.Errorf(\"{} must be one of {}, got %q\", {v})\n\t}}",
                    k.go,
                    k.yaml,
                    yaml().join(", ")
                );
            }
        }
    }
    o.push_str("\treturn nil\n}\n");
    o
}
