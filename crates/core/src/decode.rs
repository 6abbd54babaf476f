//! Decoding one JSON line into what the windowing needs: a key, an event time
//! in epoch milliseconds, and one value per aggregation.
//!
//! Only the configured fields are read; everything else in the object is
//! skipped without being built. A line that cannot be decoded yields a reason
//! for the dead-letter output, never an error that stops the run.

use std::fmt::{self, Write as _};
use std::hash::BuildHasher as _;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use sluice_config::{AggregationConfig, MissingPolicy, TimeConfig, TimeFormat};

use crate::plugin::grouped::{InputKind, InputSpec, Value, takes_one_number};

/// Event times are refused outside roughly ±100,000 years: far beyond any real
/// data, and it keeps window arithmetic clear of overflow.
pub const MAX_ABS_TIME_MS: i64 = 1 << 52;

/// Identifies a grouping key within one run (an index into [`KeyTable`]).
pub type KeyId = u32;

/// Interns keys: each distinct key is stored once, rendered as the JSON object
/// that result records carry (`{"service":"svc-1"}`), and found again by a
/// table of ids hashed by that text (4 bytes a key, not a second copy).
#[derive(Debug, Default)]
pub struct KeyTable {
    ids: hashbrown::HashTable<KeyId>,
    rendered: Vec<Box<str>>,
    hasher: foldhash::fast::RandomState,
}

impl KeyTable {
    /// The id of a rendered key, adding it if new.
    pub fn intern(&mut self, rendered: &str) -> KeyId {
        let hash = self.hasher.hash_one(rendered);
        let keys = &self.rendered;
        if let Some(&id) = self.ids.find(hash, |&id| &*keys[id as usize] == rendered) {
            return id;
        }
        let id = KeyId::try_from(self.rendered.len()).unwrap_or(KeyId::MAX);
        self.rendered.push(rendered.into());
        let (keys, hasher) = (&self.rendered, &self.hasher);
        self.ids
            .insert_unique(hash, id, |&id| hasher.hash_one(&*keys[id as usize]));
        id
    }

    /// The key's JSON object.
    pub fn render(&self, id: KeyId) -> &str {
        self.rendered.get(id as usize).map_or("{}", |k| k)
    }

    /// Keys from id `from` on, in id order: those a checkpoint has not stored yet.
    pub fn since(&self, from: usize) -> impl Iterator<Item = (KeyId, &str)> {
        self.rendered
            .iter()
            .enumerate()
            .skip(from)
            .map(|(i, k)| (i as KeyId, &**k))
    }

    /// How many distinct keys have been seen.
    pub fn len(&self) -> usize {
        self.rendered.len()
    }

    /// Whether no key has been seen yet.
    pub fn is_empty(&self) -> bool {
        self.rendered.is_empty()
    }
}

/// A decoded event, reused from line to line to avoid allocation.
#[derive(Debug, Default, PartialEq)]
pub struct Event {
    /// The key rendered as a JSON object.
    pub key: String,
    /// Event time, epoch milliseconds.
    pub time: i64,
    /// One value per aggregation; `None` where the aggregation skips this
    /// event. For an aggregation that takes typed inputs (see
    /// [`EventDecoder::bind`]) any `Some` means "this event is a row", and
    /// the values are in `cells`.
    pub values: Vec<Option<f64>>,
    /// The typed inputs of the aggregations that take them, in
    /// aggregation order, one cell per declared input.
    pub cells: Vec<Cell>,
    /// The text the cells' `Text` ranges point into.
    pub text: String,
}

impl Event {
    /// The event's values, as the window store takes them.
    pub fn row(&self) -> Row<'_> {
        Row {
            values: &self.values,
            cells: &self.cells,
            text: &self.text,
        }
    }
}

/// One typed input value of an event, for an aggregation of interface 0.2.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    /// The event has no value for the input (an optional one).
    Missing,
    /// A float.
    Float(f64),
    /// An integer.
    Integer(i64),
    /// A boolean.
    Boolean(bool),
    /// An instant in epoch milliseconds.
    Timestamp(i64),
    /// Text: bytes `start..end` of the event's text.
    Text {
        /// Where it starts in [`Event::text`].
        start: u32,
        /// Where it ends.
        end: u32,
    },
}

/// An event's values as the window store takes them: one per aggregation,
/// and the typed cells of the aggregations that take typed inputs.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    /// As [`Event::values`].
    pub values: &'a [Option<f64>],
    /// As [`Event::cells`].
    pub cells: &'a [Cell],
    /// As [`Event::text`].
    pub text: &'a str,
}

impl<'a> Row<'a> {
    /// An event of numbers only (aggregations of one number each).
    pub fn numbers(values: &'a [Option<f64>]) -> Self {
        Self {
            values,
            cells: &[],
            text: "",
        }
    }

    /// Cell `i` as a value; `None` when missing (or out of range).
    pub fn cell(&self, i: usize) -> Option<Value<'a>> {
        Some(match *self.cells.get(i)? {
            Cell::Missing => return None,
            Cell::Float(x) => Value::Float(x),
            Cell::Integer(x) => Value::Integer(x),
            Cell::Boolean(b) => Value::Boolean(b),
            Cell::Timestamp(t) => Value::Timestamp(t),
            Cell::Text { start, end } => Value::Text(self.text.get(start as usize..end as usize)?),
        })
    }
}

impl<'a> From<&'a [Option<f64>]> for Row<'a> {
    fn from(values: &'a [Option<f64>]) -> Self {
        Self::numbers(values)
    }
}

impl<'a, const N: usize> From<&'a [Option<f64>; N]> for Row<'a> {
    fn from(values: &'a [Option<f64>; N]) -> Self {
        Self::numbers(values)
    }
}

impl<'a> From<&'a Vec<Option<f64>>> for Row<'a> {
    fn from(values: &'a Vec<Option<f64>>) -> Self {
        Self::numbers(values)
    }
}

/// Where a declared input of an aggregation reads its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSource {
    /// Nowhere: an optional input the pipeline leaves unbound is always
    /// missing.
    Unbound,
    /// An event field.
    Field(String),
    /// The event time, as the pipeline reads it (a timestamp input bound to
    /// the time field).
    Time,
}

/// A declared input of an aggregation and where it reads its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundInput {
    /// The input as the plugin declares it.
    pub spec: InputSpec,
    /// Where its value comes from.
    pub source: InputSource,
}

/// How an aggregation reads an event.
#[derive(Debug, Clone)]
enum Reads {
    /// One number from a field (`None`: the constant 1), as interface 0.1.
    Number(Option<usize>),
    /// Typed inputs (interface 0.2). `one_number`: a single required float,
    /// put in [`Event::values`] rather than in cells, as the window store
    /// logs such an aggregation's rows.
    Typed {
        inputs: Vec<TypedInput>,
        one_number: bool,
    },
}

#[derive(Debug, Clone)]
struct TypedInput {
    name: String,
    kind: InputKind,
    optional: bool,
    /// `Some(i)`: `typed_fields[i]`; `None` with `time`: the event time;
    /// `None` without: unbound.
    field: Option<usize>,
    time: bool,
}

/// Turns JSON lines into [`Event`]s according to the pipeline's field mapping.
#[derive(Debug, Clone)]
pub struct EventDecoder {
    key_fields: Vec<String>,
    /// Per key field, what precedes its value in the rendered key:
    /// `{"service":` for the first, `,"model":` for the next.
    key_prefixes: Vec<String>,
    time: TimeConfig,
    /// Distinct value fields, in first-use order.
    value_fields: Vec<String>,
    /// Distinct (field, type) pairs typed inputs read, in first-use order.
    typed_fields: Vec<(String, InputKind)>,
    /// Per aggregation: its name, what it reads, and its policy.
    aggs: Vec<(String, Reads, MissingPolicy)>,
    /// Every field the decoder reads, once, with what it is read for: a
    /// line's field names are looked up here in one pass.
    roles: Vec<(String, Role)>,
    scratch: Scratch,
}

/// What one field of a line is read for; a field may serve as key, time
/// and value at once.
#[derive(Debug, Clone, Copy, Default)]
struct Role {
    key: Option<usize>,
    time: bool,
    value: Option<usize>,
    typed: bool,
}

/// What the visitor found in one line.
#[derive(Debug, Default, Clone)]
struct Scratch {
    /// Each key field's part of the key (its prefix and its value as
    /// JSON), and whether the line had it; the strings keep their capacity
    /// from line to line.
    keys: Vec<String>,
    key_seen: Vec<bool>,
    key_error: Option<String>,
    time: Option<Result<i64, String>>,
    values: Vec<Option<Result<f64, String>>>,
    /// Per typed field: its value, or what it was instead (for the reason).
    typed: Vec<Option<Result<Cell, String>>>,
    /// The text of `typed`'s text cells.
    text: String,
}

impl EventDecoder {
    /// A decoder for the given key fields, time field and aggregations.
    pub fn new(key_fields: &[String], time: &TimeConfig, aggs: &[AggregationConfig]) -> Self {
        let mut value_fields: Vec<String> = Vec::new();
        let aggs = aggs
            .iter()
            .map(|a| {
                let index = a.field.as_ref().map(|f| {
                    value_fields.iter().position(|v| v == f).unwrap_or_else(|| {
                        value_fields.push(f.clone());
                        value_fields.len() - 1
                    })
                });
                (a.name.clone(), Reads::Number(index), a.on_missing)
            })
            .collect();
        let key_prefixes = key_fields
            .iter()
            .enumerate()
            .map(|(i, field)| {
                let mut prefix = String::from(if i == 0 { "{" } else { "," });
                write_json_string(&mut prefix, field);
                prefix.push(':');
                prefix
            })
            .collect();
        let mut decoder = Self {
            key_fields: key_fields.to_vec(),
            key_prefixes,
            time: time.clone(),
            value_fields,
            typed_fields: Vec::new(),
            aggs,
            roles: Vec::new(),
            scratch: Scratch::default(),
        };
        decoder.find_roles();
        decoder
    }

    /// Works out `roles` from the fields read as keys, time, values and
    /// typed inputs.
    fn find_roles(&mut self) {
        let mut names: Vec<&String> = self.key_fields.iter().collect();
        names.push(&self.time.field);
        names.extend(&self.value_fields);
        names.extend(self.typed_fields.iter().map(|(f, _)| f));
        let mut roles: Vec<(String, Role)> = Vec::new();
        for name in names {
            if roles.iter().any(|(n, _)| n == name) {
                continue;
            }
            let role = Role {
                key: self.key_fields.iter().position(|f| f == name),
                time: self.time.field == *name,
                value: self.value_fields.iter().position(|f| f == name),
                typed: self.typed_fields.iter().any(|(f, _)| f == name),
            };
            roles.push((name.clone(), role));
        }
        self.roles = roles;
    }

    /// Makes aggregation `a` read typed inputs (interface 0.2): one cell per
    /// input of `inputs`, in order, from where each is bound. A single
    /// required float input is read as a number, as `field` is.
    ///
    /// A row goes to the aggregation unless a required input is missing or
    /// holds a value of another type; then the aggregation's `on_missing`
    /// policy decides (skip the row for it, or dead-letter the event, the
    /// reason naming the field, the type expected and the input). An
    /// optional input without a usable value is a missing cell.
    pub fn bind(&mut self, a: usize, inputs: &[BoundInput]) {
        let typed = inputs
            .iter()
            .map(|b| {
                let field = match &b.source {
                    InputSource::Field(f) => {
                        let pair = (f.clone(), b.spec.kind);
                        Some(
                            self.typed_fields
                                .iter()
                                .position(|p| *p == pair)
                                .unwrap_or_else(|| {
                                    self.typed_fields.push(pair);
                                    self.typed_fields.len() - 1
                                }),
                        )
                    }
                    InputSource::Unbound | InputSource::Time => None,
                };
                TypedInput {
                    name: b.spec.name.clone(),
                    kind: b.spec.kind,
                    optional: b.spec.optional,
                    field,
                    time: b.source == InputSource::Time,
                }
            })
            .collect();
        let specs: Vec<InputSpec> = inputs.iter().map(|b| b.spec.clone()).collect();
        if let Some((_, reads, _)) = self.aggs.get_mut(a) {
            *reads = Reads::Typed {
                inputs: typed,
                one_number: takes_one_number(&specs),
            };
        }
        self.find_roles();
    }

    /// How many values an event carries: one per aggregation.
    pub fn values_per_event(&self) -> usize {
        self.aggs.len()
    }

    /// Decodes `line` into `event`, or says why it cannot be.
    pub fn decode(&mut self, line: &[u8], event: &mut Event) -> Result<(), String> {
        self.decode_at(line, None, event)
    }

    /// Decodes `line`, a message stamped `message_time` (epoch ms) by its
    /// source, into `event`; the stamp is the event time when the time format
    /// is `kafka_timestamp`.
    pub fn decode_at(
        &mut self,
        line: &[u8],
        message_time: Option<i64>,
        event: &mut Event,
    ) -> Result<(), String> {
        let s = &mut self.scratch;
        s.keys.resize(self.key_fields.len(), String::new());
        reset(&mut s.key_seen, self.key_fields.len(), false);
        s.key_error = None;
        s.time = None;
        reset(&mut s.values, self.value_fields.len(), None);
        reset(&mut s.typed, self.typed_fields.len(), None);
        s.text.clear();

        let seed = LineSeed {
            roles: &self.roles,
            fill: Fill {
                key_prefixes: &self.key_prefixes,
                time: &self.time,
                typed_fields: &self.typed_fields,
                scratch: s,
            },
        };
        // A line checked as UTF-8 once, in one pass (simdutf8 picks the
        // CPU's vector code at run time), is parsed without
        // checking each string again. Any other line is parsed from bytes as
        // before, so what is accepted does not change: serde_json checks the
        // strings it reads and not those it skips.
        match simdutf8::basic::from_utf8(line) {
            Ok(text) => parse(&mut serde_json::Deserializer::from_str(text), seed),
            Err(_) => parse(&mut serde_json::Deserializer::from_slice(line), seed),
        }
        .map_err(|e| format!("malformed JSON: {e}"))?;

        event.time = if self.time.format == TimeFormat::KafkaTimestamp {
            message_time.ok_or("the message has no timestamp")?
        } else {
            match s.time.take() {
                None => return Err(format!("missing time field `{}`", self.time.field)),
                Some(r) => r?,
            }
        };

        if let Some(reason) = s.key_error.take() {
            return Err(reason);
        }
        if let Some(i) = s.key_seen.iter().position(|seen| !seen) {
            return Err(format!("missing key field `{}`", self.key_fields[i]));
        }
        if let [only] = s.keys.as_mut_slice() {
            // The usual single key field: its rendering becomes the key,
            // and the key's old buffer is the next line's to render into.
            only.push('}');
            std::mem::swap(&mut event.key, only);
        } else {
            event.key.clear();
            for part in &s.keys {
                event.key.push_str(part);
            }
            if s.keys.is_empty() {
                event.key.push('{');
            }
            event.key.push('}');
        }

        event.values.clear();
        event.cells.clear();
        event.text.clear();
        std::mem::swap(&mut event.text, &mut s.text);
        for (name, reads, policy) in &self.aggs {
            let value = match reads {
                Reads::Number(None) => Some(1.0),
                Reads::Number(Some(i)) => match &s.values[*i] {
                    Some(Ok(v)) => Some(*v),
                    Some(Err(reason)) => return Err(reason.clone()),
                    None if *policy == MissingPolicy::Skip => None,
                    None => {
                        return Err(format!("missing value field `{}`", self.value_fields[*i]));
                    }
                },
                Reads::Typed { inputs, one_number } => {
                    let before = event.cells.len();
                    let mut row = true;
                    for input in inputs {
                        let got = if input.time {
                            Some(Ok(Cell::Timestamp(event.time)))
                        } else {
                            input.field.and_then(|f| s.typed[f].clone())
                        };
                        let cell = match got {
                            Some(Ok(cell)) => cell,
                            _ if input.optional => Cell::Missing,
                            _ if *policy == MissingPolicy::Skip => {
                                row = false;
                                Cell::Missing
                            }
                            None => {
                                let field =
                                    input.field.map_or("", |f| self.typed_fields[f].0.as_str());
                                return Err(format!(
                                    "missing value field `{field}` (input `{}` of aggregation \
                                     `{name}`)",
                                    input.name
                                ));
                            }
                            Some(Err(what)) => {
                                let field =
                                    input.field.map_or("", |f| self.typed_fields[f].0.as_str());
                                return Err(format!(
                                    "value field `{field}` is {what}, not {} (input `{}` of \
                                     aggregation `{name}`)",
                                    kind_name(input.kind),
                                    input.name
                                ));
                            }
                        };
                        event.cells.push(cell);
                    }
                    if *one_number {
                        let number = match event.cells.get(before) {
                            Some(Cell::Float(x)) => Some(*x),
                            _ => None,
                        };
                        event.cells.truncate(before);
                        number.filter(|_| row)
                    } else if row {
                        Some(1.0)
                    } else {
                        event.cells.truncate(before);
                        event
                            .cells
                            .extend(std::iter::repeat_n(Cell::Missing, inputs.len()));
                        None
                    }
                }
            };
            event.values.push(value);
        }
        Ok(())
    }

    /// How many typed cells an event carries (see [`EventDecoder::bind`]).
    pub fn cells_per_event(&self) -> usize {
        self.aggs
            .iter()
            .map(|(_, reads, _)| match reads {
                Reads::Typed {
                    inputs,
                    one_number: false,
                } => inputs.len(),
                _ => 0,
            })
            .sum()
    }
}

/// Makes `v` hold `n` copies of `value`; the lengths are the same from
/// line to line, so this is a fill, without `resize`'s call.
#[inline]
fn reset<T: Clone>(v: &mut Vec<T>, n: usize, value: T) {
    if v.len() == n {
        for x in v.iter_mut() {
            *x = value.clone();
        }
    } else {
        v.clear();
        v.resize(n, value);
    }
}

/// A type's name with its article, for reasons: `a float`, `an integer`.
fn kind_name(kind: InputKind) -> &'static str {
    match kind {
        InputKind::Float => "a float",
        InputKind::Integer => "an integer",
        InputKind::Text => "text",
        InputKind::Boolean => "a boolean",
        InputKind::Timestamp => "a timestamp (epoch milliseconds or RFC 3339)",
    }
}

/// Appends `s` as a JSON string literal.
pub fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    // Runs without anything to escape are copied whole. Every character
    // that needs escaping is one ASCII byte, so `i` and `i + 1` are
    // character boundaries.
    let mut rest = s;
    while let Some(i) = rest
        .bytes()
        .position(|b| b < 0x20 || b == b'"' || b == b'\\')
    {
        out.push_str(&rest[..i]);
        match rest.as_bytes()[i] {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

/// Runs `seed` over one whole JSON document.
fn parse<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    seed: LineSeed<'_>,
) -> Result<(), serde_json::Error> {
    seed.deserialize(&mut *de)?;
    de.end()
}

struct LineSeed<'a> {
    roles: &'a [(String, Role)],
    fill: Fill<'a>,
}

/// Where the values of a line's read fields go, and what decides how they
/// are put there; the line's visitor lends it to each value's seed.
struct Fill<'a> {
    key_prefixes: &'a [String],
    time: &'a TimeConfig,
    typed_fields: &'a [(String, InputKind)],
    scratch: &'a mut Scratch,
}

impl<'de> DeserializeSeed<'de> for LineSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LineSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let LineSeed { roles, mut fill } = self;
        while let Some(found) = map.next_key_seed(FieldSeed(roles))? {
            let Some((name, role)) = found else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            map.next_value_seed(ValueSeed {
                name,
                role: *role,
                fill: &mut fill,
            })?;
        }
        Ok(())
    }
}

/// Reads a field name and looks it up among the fields read, in the
/// parser's own callback: the name, borrowed from the line or unescaped
/// by the parser, is never returned or copied.
struct FieldSeed<'a>(&'a [(String, Role)]);

impl<'de, 'a> DeserializeSeed<'de> for FieldSeed<'a> {
    type Value = Option<&'a (String, Role)>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'a> Visitor<'de> for FieldSeed<'a> {
    type Value = Option<&'a (String, Role)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().find(|(f, _)| f == v))
    }
}

/// Reads the value of a field that is read for something, and puts it
/// where its role says, in the parser's callback for its type.
struct ValueSeed<'a, 'b> {
    name: &'a str,
    role: Role,
    fill: &'b mut Fill<'a>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl ValueSeed<'_, '_> {
    /// Puts `scalar` where the field's role says.
    #[inline]
    fn take(self, scalar: Scalar<'_>) {
        let ValueSeed { name, role, fill } = self;
        let scratch = &mut *fill.scratch;
        if let (Some(_), Scalar::Other(what)) = (role.key, &scalar) {
            scratch.key_error = Some(format!(
                "key field `{name}` is {what}, not a string, number or boolean"
            ));
        } else if let (Some(_), Scalar::Null) = (role.key, &scalar) {
            // As a missing key field is: a null one is no key either, and
            // grouping such events under `null` would hide them.
            scratch.key_error = Some(format!("key field `{name}` is null"));
        } else if let Some(i) = role.key {
            let out = &mut scratch.keys[i];
            out.clear();
            out.push_str(&fill.key_prefixes[i]);
            scalar.write_key_json(out);
            scratch.key_seen[i] = true;
        }
        if role.time {
            scratch.time = Some(scalar.time(name, fill.time.format));
        }
        if let Some(i) = role.value {
            scratch.values[i] = Some(scalar.value(name));
        }
        if role.typed {
            for (i, (field, kind)) in fill.typed_fields.iter().enumerate() {
                if field == name {
                    scratch.typed[i] = scalar.cell(*kind, &mut scratch.text);
                }
            }
        }
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.take(Scalar::Null);
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.take(Scalar::Bool(v));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.take(Scalar::Int(v));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.take(i64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int));
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.take(Scalar::Float(v));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.take(Scalar::Str(v));
        Ok(())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.take(Scalar::Other("an array"));
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.take(Scalar::Other("an object"));
        Ok(())
    }
}

/// A field value as far as sluice cares: the JSON scalars, or something else.
#[derive(Debug)]
enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    Other(&'static str),
}

impl Scalar<'_> {
    fn describe(&self) -> String {
        match self {
            Scalar::Null => "null".into(),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Str(s) => format!("{s:?}"),
            Scalar::Other(what) => (*what).into(),
        }
    }

    fn write_key_json(&self, out: &mut String) {
        match self {
            Scalar::Null => out.push_str("null"),
            Scalar::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Scalar::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Scalar::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => {
                    let _ = write!(out, "{n}");
                }
                None => out.push_str("null"),
            },
            Scalar::Str(s) => write_json_string(out, s),
            Scalar::Other(_) => out.push_str("null"),
        }
    }

    fn value(&self, field: &str) -> Result<f64, String> {
        let v = match self {
            Scalar::Int(i) => *i as f64,
            Scalar::Float(f) => *f,
            Scalar::Bool(b) => f64::from(u8::from(*b)),
            other => {
                return Err(format!(
                    "value field `{field}` is {}, not a number",
                    other.describe()
                ));
            }
        };
        if v.is_finite() {
            Ok(v)
        } else {
            Err(format!("value field `{field}` is not finite"))
        }
    }

    /// The value as a cell of `kind` (text appended to `text`): `None` for
    /// null, which is no value; `Err` with what it is when it is of
    /// another type. Numbers and booleans are text as JSON writes them.
    fn cell(&self, kind: InputKind, text: &mut String) -> Option<Result<Cell, String>> {
        let wrong = || Some(Err(self.describe()));
        Some(Ok(match (kind, self) {
            (_, Scalar::Null) => return None,
            (InputKind::Float, Scalar::Int(i)) => Cell::Float(*i as f64),
            (InputKind::Float, Scalar::Float(f)) if f.is_finite() => Cell::Float(*f),
            // As `field` reads it: `true` counts 1.
            (InputKind::Float, Scalar::Bool(b)) => Cell::Float(f64::from(u8::from(*b))),
            (InputKind::Integer, Scalar::Int(i)) => Cell::Integer(*i),
            (InputKind::Integer, Scalar::Float(f))
                if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 =>
            {
                Cell::Integer(*f as i64)
            }
            (InputKind::Boolean, Scalar::Bool(b)) => Cell::Boolean(*b),
            (InputKind::Timestamp, Scalar::Int(ms)) if ms.abs() < MAX_ABS_TIME_MS => {
                Cell::Timestamp(*ms)
            }
            (InputKind::Timestamp, Scalar::Str(s)) => {
                match chrono::DateTime::parse_from_rfc3339(s) {
                    Ok(t) if t.timestamp_millis().abs() < MAX_ABS_TIME_MS => {
                        Cell::Timestamp(t.timestamp_millis())
                    }
                    _ => return wrong(),
                }
            }
            (InputKind::Text, Scalar::Other(_)) => return wrong(),
            (InputKind::Text, scalar) => {
                let start = text.len();
                match scalar {
                    Scalar::Str(s) => text.push_str(s),
                    other => other.write_key_json(text),
                }
                match (u32::try_from(start), u32::try_from(text.len())) {
                    (Ok(start), Ok(end)) => Cell::Text { start, end },
                    _ => return wrong(),
                }
            }
            _ => return wrong(),
        }))
    }

    fn time(&self, field: &str, format: TimeFormat) -> Result<i64, String> {
        let bad = || {
            format!(
                "time field `{field}` is {}, not {}",
                self.describe(),
                format_name(format)
            )
        };
        let ms = match (self, format) {
            (Scalar::Str(s), TimeFormat::Rfc3339) => chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|e| format!("time field `{field}` is {s:?}: not RFC 3339 ({e})"))?
                .timestamp_millis(),
            (_, TimeFormat::Rfc3339) => return Err(bad()),
            (Scalar::Int(i), f) => match f {
                TimeFormat::EpochSeconds => i.checked_mul(1000).ok_or_else(bad)?,
                TimeFormat::EpochMillis => *i,
                TimeFormat::EpochMicros => i.div_euclid(1000),
                TimeFormat::EpochNanos => i.div_euclid(1_000_000),
                TimeFormat::Rfc3339 | TimeFormat::KafkaTimestamp => return Err(bad()),
            },
            (Scalar::Float(x), f) => {
                let scaled = match f {
                    TimeFormat::EpochSeconds => x * 1e3,
                    TimeFormat::EpochMillis => *x,
                    TimeFormat::EpochMicros => x / 1e3,
                    TimeFormat::EpochNanos => x / 1e6,
                    TimeFormat::Rfc3339 | TimeFormat::KafkaTimestamp => return Err(bad()),
                };
                if !scaled.is_finite() || scaled.abs() >= MAX_ABS_TIME_MS as f64 {
                    return Err(bad());
                }
                scaled.floor() as i64
            }
            _ => return Err(bad()),
        };
        if ms.abs() >= MAX_ABS_TIME_MS {
            return Err(format!("time field `{field}` is out of range"));
        }
        Ok(ms)
    }
}

fn format_name(format: TimeFormat) -> &'static str {
    match format {
        TimeFormat::EpochSeconds => "epoch seconds",
        TimeFormat::EpochMillis => "epoch milliseconds",
        TimeFormat::EpochMicros => "epoch microseconds",
        TimeFormat::EpochNanos => "epoch nanoseconds",
        TimeFormat::Rfc3339 => "an RFC 3339 timestamp",
        TimeFormat::KafkaTimestamp => "read from a field",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder(format: TimeFormat, on_missing: MissingPolicy) -> EventDecoder {
        let agg = |name: &str, field: Option<&str>| AggregationConfig {
            name: name.into(),
            plugin: "builtin/stats".into(),
            field: field.map(Into::into),
            inputs: None,
            config: None,
            on_missing,
        };
        EventDecoder::new(
            &["service".into(), "model".into()],
            &TimeConfig {
                field: "ts".into(),
                format,
            },
            &[
                agg("lat", Some("latency_ms")),
                agg("n", None),
                agg("err", Some("error")),
            ],
        )
    }

    fn decode(d: &mut EventDecoder, line: &str) -> Result<Event, String> {
        let mut ev = Event::default();
        d.decode(line.as_bytes(), &mut ev).map(|()| ev)
    }

    #[test]
    fn field_names_with_escapes_are_matched_by_their_text() {
        // Escaped names cannot be borrowed from the line; they must still match.
        let mut d = decoder(TimeFormat::EpochMillis, MissingPolicy::DeadLetter);
        let ev = decode(
            &mut d,
            r#"{"\u0074s":5,"serv\u0069ce":"a","model":"b","latency\u005fms":2,"error":false}"#,
        )
        .unwrap();
        assert_eq!(ev.key, r#"{"service":"a","model":"b"}"#);
        assert_eq!(ev.time, 5);
        assert_eq!(ev.values, vec![Some(2.0), Some(1.0), Some(0.0)]);
    }

    #[test]
    fn reads_key_time_and_values() {
        let mut d = decoder(TimeFormat::EpochMillis, MissingPolicy::DeadLetter);
        let ev = decode(
            &mut d,
            r#"{"model":"m\"1","ts":1700000000123,"x":{"deep":[1,2]},"service":"chat","latency_ms":12.5,"error":true}"#,
        )
        .unwrap();
        assert_eq!(ev.key, r#"{"service":"chat","model":"m\"1"}"#);
        assert_eq!(ev.time, 1_700_000_000_123);
        assert_eq!(ev.values, vec![Some(12.5), Some(1.0), Some(1.0)]);
    }

    #[test]
    fn time_formats() {
        let mut d = decoder(TimeFormat::Rfc3339, MissingPolicy::DeadLetter);
        let line = r#"{"ts":"2023-11-14T22:13:20.5Z","service":"a","model":"b","latency_ms":1,"error":false}"#;
        assert_eq!(decode(&mut d, line).unwrap().time, 1_700_000_000_500);
        let mut d = decoder(TimeFormat::EpochSeconds, MissingPolicy::DeadLetter);
        let line = r#"{"ts":1700000000.25,"service":"a","model":"b","latency_ms":1,"error":false}"#;
        assert_eq!(decode(&mut d, line).unwrap().time, 1_700_000_000_250);
        let mut d = decoder(TimeFormat::EpochMicros, MissingPolicy::DeadLetter);
        let line =
            r#"{"ts":1700000000250999,"service":"a","model":"b","latency_ms":1,"error":false}"#;
        assert_eq!(decode(&mut d, line).unwrap().time, 1_700_000_000_250);
    }

    /// With one key field the key is built in place line after line: each
    /// line's key is its own, also after a line without the key field.
    #[test]
    fn one_key_field_gives_each_line_its_key() {
        let mut d = EventDecoder::new(
            &["service".into()],
            &TimeConfig {
                field: "ts".into(),
                format: TimeFormat::EpochMillis,
            },
            &[],
        );
        let mut event = Event::default();
        for (line, key) in [
            (r#"{"ts":1,"service":"chat"}"#, Ok(r#"{"service":"chat"}"#)),
            (r#"{"ts":2,"service":"a\"b"}"#, Ok(r#"{"service":"a\"b"}"#)),
            (r#"{"ts":3}"#, Err("missing key field `service`")),
            (r#"{"ts":4,"service":7}"#, Ok(r#"{"service":7}"#)),
            (r#"{"service":"x","ts":5}"#, Ok(r#"{"service":"x"}"#)),
        ] {
            let got = d
                .decode(line.as_bytes(), &mut event)
                .map(|()| event.key.as_str());
            assert_eq!(got, key.map_err(String::from), "{line}");
        }
    }

    /// A line that is not UTF-8 is parsed from bytes, as serde_json takes
    /// it: a bad byte in a string the decoder skips is no reason to drop
    /// the event; one in a string it reads is, with the byte's column.
    #[test]
    fn lines_that_are_not_utf8() {
        let mut d = decoder(TimeFormat::EpochMillis, MissingPolicy::DeadLetter);
        let mut event = Event::default();
        let skipped =
            b"{\"ts\":5,\"service\":\"a\",\"model\":\"m\",\"note\":\"b\xff\",\"latency_ms\":2,\"error\":false}";
        d.decode(skipped, &mut event).expect("decoded");
        assert_eq!(event.key, r#"{"service":"a","model":"m"}"#);
        let read =
            b"{\"ts\":5,\"service\":\"a\xff\",\"model\":\"m\",\"latency_ms\":2,\"error\":false}";
        assert_eq!(
            d.decode(read, &mut event).unwrap_err(),
            "malformed JSON: invalid unicode code point at line 1 column 21"
        );
    }

    #[test]
    fn bad_lines_say_why() {
        let mut d = decoder(TimeFormat::EpochMillis, MissingPolicy::DeadLetter);
        let cases = [
            (
                r#"{"ts":1,"service":"a","model":"b","latency_ms":1"#,
                "malformed JSON",
            ),
            (
                r#"{"service":"a","model":"b","latency_ms":1,"error":false}"#,
                "missing time field `ts`",
            ),
            (
                r#"{"ts":1,"model":"b","latency_ms":1,"error":false}"#,
                "missing key field `service`",
            ),
            (
                r#"{"ts":1,"service":null,"model":"b","latency_ms":1,"error":false}"#,
                "key field `service` is null",
            ),
            (
                r#"{"ts":1,"service":"a","model":"b","latency_ms":"12","error":false}"#,
                "not a number",
            ),
            (
                r#"{"ts":1,"service":"a","model":"b","error":false}"#,
                "missing value field `latency_ms`",
            ),
            (
                r#"{"ts":"soon","service":"a","model":"b","latency_ms":1,"error":false}"#,
                "not epoch milliseconds",
            ),
            (
                r#"{"ts":1,"service":"a","model":"b","latency_ms":1e999,"error":false}"#,
                "malformed JSON",
            ),
            (r#"[1,2]"#, "malformed JSON"),
            (
                r#"{"ts":1,"service":"a","model":"b","latency_ms":1,"error":false} x"#,
                "malformed JSON",
            ),
        ];
        for (line, want) in cases {
            let got = decode(&mut d, line).unwrap_err();
            assert!(got.contains(want), "{line}: {got}");
        }
    }

    #[test]
    fn skip_policy_leaves_the_aggregation_out() {
        let mut d = decoder(TimeFormat::EpochMillis, MissingPolicy::Skip);
        let ev = decode(&mut d, r#"{"ts":5,"service":"a","model":"b"}"#).unwrap();
        assert_eq!(ev.values, vec![None, Some(1.0), None]);
    }

    #[test]
    fn key_table_interns() {
        let mut t = KeyTable::default();
        let a = t.intern(r#"{"s":"a"}"#);
        let b = t.intern(r#"{"s":"b"}"#);
        assert_ne!(a, b);
        assert_eq!(t.intern(r#"{"s":"a"}"#), a);
        assert_eq!(t.render(b), r#"{"s":"b"}"#);
    }
}
