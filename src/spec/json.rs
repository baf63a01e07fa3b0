//! JSON form of a [`PermutationSpec`].
//!
//! A plain spec is the original object `{"param": ["P_0", null, …], …}` (one entry per axis:
//! a permutation name or `null`), and a plain spec is always written that way, so every
//! existing file reads and writes unchanged. A spec with structured parts is
//!
//! ```json
//! {
//!   "params": {
//!     "h.0.attn.c_attn.weight": {"layout": "in_out",
//!        "axes": ["P_res", [{"perm": "P_qk0", "size": 64}, {"perm": "P_qk0", "size": 64},
//!                           {"perm": "P_vo0", "size": 64}]]},
//!     "h.0.attn.c_proj.weight": {"layout": "in_out", "axes": ["P_vo0", "P_res"]},
//!     "fc.weight": ["P_res", null]
//!   },
//!   "perms": {
//!     "P_qk0": {"heads": 4, "within_head": "fixed", "role": "query_key", "same_heads_as": "P_vo0"},
//!     "P_vo0": {"heads": 4},
//!     "P_res2": {"embeds": "P_res1", "offset": 8},
//!     "P_h": {"recurrent": true}
//!   }
//! }
//! ```
//!
//! A parameter entry (in either form) is either the plain axis array or an object with `axes`,
//! an optional `layout` (`"out_in"`, the default, or `"in_out"`) and an optional view
//! `"unflatten": {"axis": k, "inner": [...]}` (see [`Unflatten`]; the axes are then those of
//! the view); an axis is `null`, a name, or an array of
//! segments `{"perm": name or null, "size": n}`. Unknown keys are errors, never ignored.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{
    AxisSpec, Embed, Heads, Layout, PermDecl, PermRole, PermutationSpec, Segment, Unflatten,
    WithinHead,
};

type Res<T> = std::result::Result<T, String>;

fn expect_keys(obj: &Map<String, Value>, allowed: &[&str], what: &str) -> Res<()> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "unknown key `{k}` in {what} (allowed: {allowed:?})"
        )),
        None => Ok(()),
    }
}

fn parse_axis(v: &Value, param: &str) -> Res<AxisSpec> {
    match v {
        Value::Null => Ok(AxisSpec::Fixed),
        Value::String(s) => Ok(AxisSpec::Perm(s.clone())),
        Value::Array(segs) if segs.is_empty() => Err(format!(
            "an axis of `{param}` lists no segments (write null for an axis left alone)"
        )),
        Value::Array(segs) => segs
            .iter()
            .map(|s| {
                let obj = s.as_object().ok_or_else(|| {
                    format!("a segment of `{param}` must be an object {{\"perm\": …, \"size\": …}}")
                })?;
                expect_keys(obj, &["perm", "size"], &format!("a segment of `{param}`"))?;
                let perm = match obj.get("perm") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(p)) => Some(p.clone()),
                    Some(_) => {
                        return Err(format!(
                            "segment `perm` of `{param}` must be a name or null"
                        ))
                    }
                };
                let size = obj
                    .get("size")
                    .and_then(Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        format!("a segment of `{param}` needs a non-negative integer `size`")
                    })?;
                Ok(Segment { perm, size })
            })
            .collect::<Res<Vec<_>>>()
            .map(AxisSpec::Segments),
        _ => Err(format!(
            "an axis of `{param}` must be null, a permutation name or an array of segments"
        )),
    }
}

fn parse_axes(v: &Value, param: &str) -> Res<Vec<AxisSpec>> {
    let axes = v
        .as_array()
        .ok_or_else(|| format!("the axes of `{param}` must be an array"))?;
    if axes.is_empty() {
        return Err(format!(
            "`{param}` lists no axes (a parameter the spec does not permute is left out)"
        ));
    }
    axes.iter().map(|a| parse_axis(a, param)).collect()
}

fn parse_decl(name: &str, v: &Value) -> Res<PermDecl> {
    let what = format!("the declaration of `{name}`");
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{what} must be an object"))?;
    expect_keys(
        obj,
        &[
            "heads",
            "within_head",
            "same_heads_as",
            "role",
            "recurrent",
            "embeds",
            "offset",
        ],
        &what,
    )?;
    let string = |k: &str| -> Res<Option<String>> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("`{k}` in {what} must be a string")),
        }
    };
    let count = |k: &str| -> Res<Option<usize>> {
        obj.get(k)
            .map(|x| {
                x.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| format!("`{k}` in {what} must be a non-negative integer"))
            })
            .transpose()
    };
    let within_head = match string("within_head")?.as_deref() {
        None | Some("free") => WithinHead::Free,
        Some("fixed") => WithinHead::Fixed,
        Some(o) => {
            return Err(format!(
                "`within_head` must be \"free\" or \"fixed\", got {o:?}"
            ))
        }
    };
    let heads = count("heads")?.map(|count| Heads { count, within_head });
    if heads.is_none() && obj.contains_key("within_head") {
        return Err(format!("`within_head` in {what} needs `heads`"));
    }
    let role = match string("role")?.as_deref() {
        None | Some("hidden") => PermRole::Hidden,
        Some("query_key") => PermRole::QueryKey,
        Some(o) => {
            return Err(format!(
                "`role` must be \"hidden\" or \"query_key\", got {o:?}"
            ))
        }
    };
    let recurrent = match obj.get("recurrent") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(format!("`recurrent` in {what} must be true or false")),
    };
    let embeds = match (string("embeds")?, count("offset")?) {
        (Some(perm), Some(offset)) => Some(Embed { perm, offset }),
        (None, None) => None,
        _ => return Err(format!("{what}: `embeds` and `offset` go together")),
    };
    Ok(PermDecl {
        heads,
        same_heads_as: string("same_heads_as")?,
        role,
        recurrent,
        embeds,
    })
}

/// Read one parameter's entry (a plain axis array, or an object with `axes` and optionally
/// `layout` and `unflatten`) into `spec`.
fn parse_entry(spec: &mut PermutationSpec, param: &str, entry: &Value) -> Res<()> {
    let Value::Object(obj) = entry else {
        spec.insert_axes(param, parse_axes(entry, param)?);
        return Ok(());
    };
    let what = format!("the entry of `{param}`");
    expect_keys(obj, &["axes", "layout", "unflatten"], &what)?;
    let axes = obj
        .get("axes")
        .ok_or_else(|| format!("{what} needs `axes`"))?;
    spec.insert_axes(param, parse_axes(axes, param)?);
    let layout = match obj.get("layout").map(Value::as_str) {
        None | Some(Some("out_in")) => Layout::OutIn,
        Some(Some("in_out")) => Layout::InOut,
        Some(_) => {
            return Err(format!(
                "`layout` of `{param}` must be \"out_in\" or \"in_out\""
            ))
        }
    };
    spec.set_layout(param, layout);
    if let Some(u) = obj.get("unflatten") {
        let u: Unflatten = serde_json::from_value(u.clone())
            .map_err(|e| format!("`unflatten` of `{param}`: {e}"))?;
        spec.unflatten.insert(param.to_string(), u);
    }
    Ok(())
}

/// Read a spec from a JSON value (either form; see the [module docs](self)).
pub(super) fn from_value(v: &Value) -> Res<PermutationSpec> {
    let top = v
        .as_object()
        .ok_or("a permutation spec must be a JSON object")?;
    let mut spec = PermutationSpec::new();
    let extended = top.get("params").is_some_and(Value::is_object);
    if !extended {
        for (param, entry) in top {
            parse_entry(&mut spec, param, entry)?;
        }
        return Ok(spec);
    }
    expect_keys(top, &["params", "perms"], "the spec (extended form)")?;
    for (param, entry) in top["params"].as_object().expect("checked") {
        parse_entry(&mut spec, param, entry)?;
    }
    if let Some(perms) = top.get("perms") {
        let perms = perms.as_object().ok_or("`perms` must be an object")?;
        for (name, decl) in perms {
            spec.declare(name.clone(), parse_decl(name, decl)?);
        }
    }
    Ok(spec)
}

fn axis_value(a: &AxisSpec) -> Value {
    match a {
        AxisSpec::Fixed => Value::Null,
        AxisSpec::Perm(p) => json!(p),
        AxisSpec::Segments(s) => s
            .iter()
            .map(|s| json!({"perm": s.perm, "size": s.size}))
            .collect(),
    }
}

fn decl_value(d: &PermDecl) -> Value {
    let mut m = Map::new();
    if let Some(h) = d.heads {
        m.insert("heads".into(), json!(h.count));
        if h.within_head == WithinHead::Fixed {
            m.insert("within_head".into(), json!("fixed"));
        }
    }
    if let Some(o) = &d.same_heads_as {
        m.insert("same_heads_as".into(), json!(o));
    }
    if d.role == PermRole::QueryKey {
        m.insert("role".into(), json!("query_key"));
    }
    if d.recurrent {
        m.insert("recurrent".into(), json!(true));
    }
    if let Some(e) = &d.embeds {
        m.insert("embeds".into(), json!(e.perm));
        m.insert("offset".into(), json!(e.offset));
    }
    Value::Object(m)
}

/// The JSON value of a spec: the plain form when it has no structured part.
pub(super) fn to_value(spec: &PermutationSpec) -> Value {
    let mut params = Map::new();
    for (param, _) in spec.iter() {
        let axes: Value = spec
            .axis_specs(param)
            .unwrap_or_default()
            .iter()
            .map(axis_value)
            .collect();
        let layout = spec.layout(param);
        let view = spec.unflatten(param);
        let entry = if layout == Layout::OutIn && view.is_none() {
            axes
        } else {
            let mut obj = Map::new();
            obj.insert("axes".into(), axes);
            if layout == Layout::InOut {
                obj.insert("layout".into(), json!("in_out"));
            }
            if let Some(u) = view {
                obj.insert(
                    "unflatten".into(),
                    json!({"axis": u.axis, "inner": u.inner}),
                );
            }
            Value::Object(obj)
        };
        params.insert(param.to_string(), entry);
    }
    if spec.is_plain() {
        return Value::Object(params);
    }
    let perms: BTreeMap<&str, Value> = spec.decls().map(|(k, d)| (k, decl_value(d))).collect();
    json!({"params": params, "perms": perms})
}

impl serde::Serialize for PermutationSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        to_value(self).serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for PermutationSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        from_value(&v).map_err(serde::de::Error::custom)
    }
}
