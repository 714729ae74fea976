//! The alert rules' settings at startup (the twin may change them): what the rule flags are
//! checked into, and the topics rules publish on.

use crate::mqtt::topic::Template;
use crate::pipeline::rules::RuleSettings;
use crate::pipeline::verdict::FieldPath;

/// Default of `--summary-topic`.
pub const SUMMARY_TOPIC: &str = "summaries/{topic}";
/// Default of `--summary-output`.
pub const SUMMARY_OUTPUT: &str = "summary";

/// The validated rule flags.
#[derive(Debug, Clone)]
pub struct RuleConfig {
    pub settings: RuleSettings,
    pub event_time: Option<FieldPath>,
    /// `--clear-topic` as given (None: the version's default, see `plan`).
    pub clear_topic: Option<Template>,
    pub summary_topic: Template,
    pub summary_output: String,
}

impl RuleConfig {
    /// Every rule off, as with no rule flag (what the demo starts from).
    pub fn off() -> RuleConfig {
        RuleConfig {
            settings: RuleSettings::default(),
            event_time: None,
            clear_topic: None,
            summary_topic: Template::parse(SUMMARY_TOPIC).expect("a valid template"),
            summary_output: SUMMARY_OUTPUT.to_string(),
        }
    }
}

/// `cleared/{topic}`: where clearing messages go under MQTT 3.1.1 unless `--clear-topic` says.
pub fn default_v4_clear_template() -> Template {
    Template::parse("cleared/{topic}").expect("a valid template")
}
