//! An example aggregator of interface 0.2 with three typed inputs: the
//! dollar cost of a window's LLM requests, from each request's `model`
//! (text), `prompt_tokens` and `completion_tokens` (integers) and a price
//! table in the plugin's config, with the cost per model as a ranked list.
//!
//! ```yaml
//! - name: cost
//!   plugin: ../out/plugins/llm_cost.wasm
//!   inputs: { model: model, prompt_tokens: prompt_tokens, completion_tokens: completion_tokens }
//!   config: { prices: { gpt-4o: { prompt: 0.0025, completion: 0.01 } } }
//! ```
//!
//! Prices are US dollars per 1,000 tokens. A request of a model the table
//! does not price costs nothing and is counted in `unpriced`, so a new
//! model shows up instead of vanishing. A request without a completion
//! token count (an error, say) is charged for its prompt only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_sdk::typed::{Input, Inputs, Row, TypedAggregator, Value};
use sluice_sdk::{Info, Output, export_typed};

/// The price of one model, in dollars per 1,000 tokens.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    prompt: f64,
    completion: f64,
}

/// `{ "prices": { MODEL: { "prompt": USD, "completion": USD } } }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    prices: BTreeMap<String, Price>,
}

/// One request.
pub struct Request<'a> {
    model: &'a str,
    prompt_tokens: i64,
    completion_tokens: Option<i64>,
}

impl<'a> Inputs<'a> for Request<'a> {
    fn declare() -> Vec<Input> {
        vec![
            Input::text("model", "the model that served the request"),
            Input::integer("prompt_tokens", "tokens in the prompt"),
            Input::integer("completion_tokens", "tokens generated").optional(),
        ]
    }

    fn read(row: &Row<'a>) -> Option<Self> {
        Some(Request {
            model: row.text(0)?,
            prompt_tokens: row.integer(1)?,
            completion_tokens: row.integer(2),
        })
    }
}

/// A window's cost so far, per priced model, and the unpriced requests.
#[derive(Default, Serialize, Deserialize)]
pub struct Spend {
    by_model: BTreeMap<String, f64>,
    unpriced: u64,
}

/// The cost of LLM requests.
pub struct LlmCost {
    prices: BTreeMap<String, Price>,
}

impl TypedAggregator for LlmCost {
    type Config = Config;
    type State = Spend;
    type Input<'a> = Request<'a>;
    const INFO: Info = Info::mergeable(
        "llm-cost",
        env!("CARGO_PKG_VERSION"),
        "dollar cost of LLM requests from their model and token counts and a price table",
    )
    .with_config_help(
        r#"{"prices": {"gpt-4o": {"prompt": 0.0025, "completion": 0.01}}}: USD per 1,000 tokens"#,
    );

    fn new(config: Config) -> Result<Self, String> {
        if let Some((model, _)) = config.prices.iter().find(|(_, p)| {
            !(p.prompt.is_finite() && p.completion.is_finite())
                || p.prompt < 0.0
                || p.completion < 0.0
        }) {
            return Err(format!(
                "`prices.{model}`: prices must be finite and not negative"
            ));
        }
        Ok(LlmCost {
            prices: config.prices,
        })
    }

    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::float("usd", "cost of the window's requests, in US dollars"),
            Output::integer("unpriced", "requests of a model the price table lacks"),
            Output::ranked("by_model", "cost per model, most expensive first"),
        ]
    }

    fn create(&self) -> Spend {
        Spend::default()
    }

    fn update(&self, spend: &mut Spend, request: Request<'_>, _time: i64) {
        let Some(price) = self.prices.get(request.model) else {
            spend.unpriced += 1;
            return;
        };
        let tokens = |n: i64| n.max(0) as f64 / 1000.0;
        let cost = tokens(request.prompt_tokens) * price.prompt
            + tokens(request.completion_tokens.unwrap_or(0)) * price.completion;
        *spend.by_model.entry(request.model.to_string()).or_default() += cost;
    }

    fn merge(&self, spend: &mut Spend, other: &Spend) -> Result<(), String> {
        for (model, cost) in &other.by_model {
            *spend.by_model.entry(model.clone()).or_default() += cost;
        }
        spend.unpriced += other.unpriced;
        Ok(())
    }

    fn evaluate(&self, spend: &Spend) -> Vec<Option<Value>> {
        let mut ranked: Vec<(String, f64)> = spend
            .by_model
            .iter()
            .map(|(model, cost)| (model.clone(), *cost))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        vec![
            Some(Value::Float(spend.by_model.values().sum())),
            Some(Value::Integer(
                i64::try_from(spend.unpriced).unwrap_or(i64::MAX),
            )),
            Some(Value::Ranked(ranked)),
        ]
    }
}

export_typed!(LlmCost);
