//! The one error type of this crate.

use crate::recipe::{InputType, RecipeKind};

/// Everything that can go wrong loading or rendering a recipe. Every variant names the
/// recipe (and the input, template or path when there is one) so it can be shown as a
/// condition message as is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecipeError {
    /// The recipe file is not valid YAML or does not have the recipe shape.
    #[error("recipe {recipe}: cannot parse: {message}")]
    Parse {
        /// Recipe name, or `<unnamed>` when the file could not be read far enough.
        recipe: String,
        /// What the parser said.
        message: String,
    },
    /// The recipe parses but is inconsistent (bad input definition, default of the
    /// wrong type, duplicate names, ...).
    #[error("recipe {recipe}: {message}")]
    Invalid {
        /// Recipe name.
        recipe: String,
        /// What is wrong.
        message: String,
    },
    /// A template does not compile.
    #[error("recipe {recipe}, template {template}: syntax error: {message}")]
    TemplateSyntax {
        /// Recipe name.
        recipe: String,
        /// Template name.
        template: String,
        /// What the handlebars parser said.
        message: String,
    },
    /// No recipe of that name in the catalog.
    #[error("unknown recipe {name:?}; known {kind} recipes: {}", known.join(", "))]
    UnknownRecipe {
        /// The name asked for.
        name: String,
        /// The kind the caller needed.
        kind: RecipeKind,
        /// The catalog's recipes of that kind, by name.
        known: Vec<String>,
    },
    /// A node recipe was used as a workload recipe or the other way round.
    #[error("recipe {recipe} is a {actual} recipe, expected a {expected} recipe")]
    WrongKind {
        /// Recipe name.
        recipe: String,
        /// The kind the caller needed.
        expected: RecipeKind,
        /// The recipe's kind.
        actual: RecipeKind,
    },
    /// An input that the recipe does not declare.
    #[error("recipe {recipe}: unknown input {input:?}")]
    UnknownInput {
        /// Recipe name.
        recipe: String,
        /// Input name.
        input: String,
    },
    /// A required input without a value.
    #[error("recipe {recipe}: input {input:?} is required")]
    MissingInput {
        /// Recipe name.
        recipe: String,
        /// Input name.
        input: String,
    },
    /// An input value of the wrong type.
    #[error("recipe {recipe}: input {input:?} must be {expected}, got {found}")]
    WrongType {
        /// Recipe name.
        recipe: String,
        /// Input name.
        input: String,
        /// The declared type.
        expected: InputType,
        /// What was given, shortly.
        found: String,
    },
    /// An enum input whose value is not one of the allowed values.
    #[error("recipe {recipe}: input {input:?} is {value:?}, expected one of {allowed:?}")]
    NotInEnum {
        /// Recipe name.
        recipe: String,
        /// Input name.
        input: String,
        /// The given value.
        value: String,
        /// The allowed values.
        allowed: Vec<String>,
    },
    /// The recipe's `requires` is not met by the node pool.
    #[error("recipe {recipe}: requirement not met: {requirement}")]
    Unmet {
        /// Recipe name.
        recipe: String,
        /// Which requirement and why.
        requirement: String,
    },
    /// A template failed while rendering (missing variable in strict mode, a helper
    /// refusing a value, ...).
    #[error("recipe {recipe}, template {template}: render failed: {message}")]
    Render {
        /// Recipe name.
        recipe: String,
        /// Template name.
        template: String,
        /// What handlebars said.
        message: String,
    },
    /// The rendered text is not what the recipe kind needs: not YAML, not a mapping,
    /// not a Kubernetes object, or an object that does not parse as its type.
    #[error("recipe {recipe}, template {template}: bad output at {path}: {message}")]
    Output {
        /// Recipe name.
        recipe: String,
        /// Template name.
        template: String,
        /// Where in the output (`.` for the whole document, `Deployment/x: spec.replicas` ...).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A node template rendered a top-level key that is not a cloud-config module key
    /// kelp knows ([`crate::KNOWN_CLOUD_CONFIG_KEYS`]), e.g. a misspelt `packges:`.
    /// cloud-init would ignore it silently, so the whole user-data is refused.
    #[error(
        "recipe {recipe}, template {template}: unknown cloud-config key {key:?}{}",
        crate::cloud_config::did_you_mean(.suggestion)
    )]
    UnknownCloudConfigKey {
        /// Recipe name.
        recipe: String,
        /// Template name.
        template: String,
        /// The key as rendered.
        key: String,
        /// The closest known key, when one is close.
        suggestion: Option<String>,
    },
    /// Two cloud-config parts disagree on the type of a key (e.g. a list and a mapping).
    #[error("recipe {recipe}, template {template}: cannot merge {path}: {message}")]
    Merge {
        /// Recipe name of the later part.
        recipe: String,
        /// Template name of the later part.
        template: String,
        /// Key path in the cloud-config.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl RecipeError {
    /// A short stable label for metrics, Events and condition reasons.
    pub fn label(&self) -> &'static str {
        match self {
            RecipeError::Parse { .. } => "RecipeParse",
            RecipeError::Invalid { .. } => "RecipeInvalid",
            RecipeError::TemplateSyntax { .. } => "TemplateSyntax",
            RecipeError::UnknownRecipe { .. } => "UnknownRecipe",
            RecipeError::WrongKind { .. } => "WrongRecipeKind",
            RecipeError::UnknownInput { .. } => "UnknownInput",
            RecipeError::MissingInput { .. } => "MissingInput",
            RecipeError::WrongType { .. } => "InputWrongType",
            RecipeError::NotInEnum { .. } => "InputNotInEnum",
            RecipeError::Unmet { .. } => "RequirementNotMet",
            RecipeError::Render { .. } => "RenderFailed",
            RecipeError::Output { .. } => "BadOutput",
            RecipeError::Merge { .. } => "MergeConflict",
            RecipeError::UnknownCloudConfigKey { .. } => "UnknownCloudConfigKey",
        }
    }

    /// The recipe the error is about, when there is one.
    pub fn recipe(&self) -> Option<&str> {
        match self {
            RecipeError::UnknownRecipe { .. } => None,
            RecipeError::Parse { recipe, .. }
            | RecipeError::Invalid { recipe, .. }
            | RecipeError::TemplateSyntax { recipe, .. }
            | RecipeError::WrongKind { recipe, .. }
            | RecipeError::UnknownInput { recipe, .. }
            | RecipeError::MissingInput { recipe, .. }
            | RecipeError::WrongType { recipe, .. }
            | RecipeError::NotInEnum { recipe, .. }
            | RecipeError::Unmet { recipe, .. }
            | RecipeError::Render { recipe, .. }
            | RecipeError::Output { recipe, .. }
            | RecipeError::Merge { recipe, .. }
            | RecipeError::UnknownCloudConfigKey { recipe, .. } => Some(recipe),
        }
    }
}
