//! Mutations of a tenant's configuration: storage targets, custom fields, field visibility and evaluation
//! forms. Inputs are checked here only for what GraphQL cannot say (exactly one kind of storage, numbers
//! that must not be negative), each refusal naming its input field; the rest is the domain's to judge.
//! Storage credentials arrive as `SecretString` and go straight to the administration service to be sealed.

use std::collections::BTreeMap;

use async_graphql::{Context, Enum, InputObject, Object};
use recall_commands::admin::{AdminCommand, EvaluationFormRequest, StorageSettings, StorageTargetRequest};
use recall_domain::custom_field::{CustomFieldCommand, CustomFieldDefinition, FieldType, SearchSettings};
use recall_domain::evaluation_form::{Answer, FormDefinition, Question, Section};
use recall_domain::field_visibility::FieldVisibilityCommand;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{new_id, run, Changed, MutationResult};
use crate::error::{ApiError, ApiResult};
use crate::types::LayoutGql;

/// A secret entered empty counts as left out (a browser form sends its untouched password field empty).
fn entered(secret: Option<SecretString>) -> Option<SecretString> {
    secret.filter(|s| !s.expose_secret().is_empty())
}

/// A TCP port from a GraphQL Int.
fn port(value: i32, field: &str) -> ApiResult<u16> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::invalid_field(field, "a port is a number from 1 to 65535"))
}

/// A count or share that must not be negative, from a GraphQL Int.
fn not_negative(value: i32, field: &str, what: &str) -> ApiResult<u32> {
    u32::try_from(value).map_err(|_| ApiError::invalid_field(field, format!("{what} cannot be negative")))
}

/// A directory on the recall node's file system.
#[derive(Debug, InputObject)]
pub struct LocalFilesystemSettingsInput {
    /// An absolute path.
    pub path: String,
}

/// An S3 bucket, at AWS or at an S3-compatible service.
#[derive(Debug, InputObject)]
pub struct S3SettingsInput {
    /// The service's URL; null for AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// A key prefix the recordings are written under.
    pub prefix: Option<String>,
    pub access_key_id: String,
    /// Required when adding; on an edit, left out (or empty) keeps the stored one.
    pub secret_access_key: Option<SecretString>,
    /// Address the bucket as endpoint/bucket (most S3-compatible services need this).
    #[graphql(default)]
    pub path_style: bool,
}

/// An FTP server (FTPS with tls).
#[derive(Debug, InputObject)]
pub struct FtpSettingsInput {
    pub host: String,
    #[graphql(default = 21)]
    pub port: i32,
    pub username: String,
    /// Required when adding; on an edit, left out (or empty) keeps the stored one.
    pub password: Option<SecretString>,
    /// Empty: the login directory.
    #[graphql(default)]
    pub directory: String,
    /// Explicit FTPS (AUTH TLS).
    #[graphql(default)]
    pub tls: bool,
}

/// An SFTP server; a password, a private key or both.
#[derive(Debug, InputObject)]
pub struct SftpSettingsInput {
    pub host: String,
    #[graphql(default = 22)]
    pub port: i32,
    pub username: String,
    /// On an edit, left out (or empty) keeps the stored one.
    pub password: Option<SecretString>,
    /// A private key in OpenSSH format; on an edit, left out (or empty) keeps the stored one.
    pub private_key: Option<SecretString>,
    /// Empty: the login directory.
    #[graphql(default)]
    pub directory: String,
    /// The server's host key fingerprint as ssh-keygen -l shows it (SHA256:…); null trusts any key.
    pub host_key_fingerprint: Option<String>,
}

/// Where recordings are written: exactly one of the kinds.
#[derive(Debug, InputObject)]
pub struct StorageSettingsInput {
    pub local_filesystem: Option<LocalFilesystemSettingsInput>,
    pub s3: Option<S3SettingsInput>,
    pub ftp: Option<FtpSettingsInput>,
    pub sftp: Option<SftpSettingsInput>,
}

/// Whether settings are for a new target (which needs its secrets) or an edit (which may keep them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Add,
    Edit,
}

impl StorageSettingsInput {
    /// The settings of the one kind given; `field` is where they were given, for the error.
    fn into_settings(self, field: &str, purpose: Purpose) -> ApiResult<StorageSettings> {
        let required = |secret: Option<SecretString>, name: String, what: &str| match entered(secret) {
            None if purpose == Purpose::Add => Err(ApiError::invalid_field(&name, format!("the {what} is required"))),
            secret => Ok(secret),
        };
        match (self.local_filesystem, self.s3, self.ftp, self.sftp) {
            (Some(local), None, None, None) => Ok(StorageSettings::LocalFilesystem { path: local.path }),
            (None, Some(s3), None, None) => Ok(StorageSettings::S3 {
                secret_access_key: required(
                    s3.secret_access_key,
                    format!("{field}.s3.secretAccessKey"),
                    "secret access key",
                )?,
                endpoint: s3.endpoint,
                region: s3.region,
                bucket: s3.bucket,
                prefix: s3.prefix,
                access_key_id: s3.access_key_id,
                path_style: s3.path_style,
            }),
            (None, None, Some(ftp), None) => Ok(StorageSettings::Ftp {
                port: port(ftp.port, &format!("{field}.ftp.port"))?,
                password: required(ftp.password, format!("{field}.ftp.password"), "password")?,
                host: ftp.host,
                username: ftp.username,
                directory: ftp.directory,
                tls: ftp.tls,
            }),
            (None, None, None, Some(sftp)) => {
                let (password, private_key) = (entered(sftp.password), entered(sftp.private_key));
                if purpose == Purpose::Add && password.is_none() && private_key.is_none() {
                    return Err(ApiError::invalid_field(
                        &format!("{field}.sftp"),
                        "an SFTP target needs a password, a private key or both",
                    ));
                }
                Ok(StorageSettings::Sftp {
                    port: port(sftp.port, &format!("{field}.sftp.port"))?,
                    host: sftp.host,
                    username: sftp.username,
                    password,
                    private_key,
                    directory: sftp.directory,
                    host_key_fingerprint: sftp.host_key_fingerprint,
                })
            }
            _ => Err(ApiError::invalid_field(
                field,
                "give the settings of exactly one kind of storage: localFilesystem, s3, ftp or sftp",
            )),
        }
    }
}

/// A storage target's name and settings.
#[derive(Debug, InputObject)]
pub struct StorageTargetInput {
    pub name: String,
    pub settings: StorageSettingsInput,
}

/// A new storage target of a tenant.
#[derive(Debug, InputObject)]
pub struct AddStorageTargetInput {
    /// The new target's id (made here when left out).
    pub id: Option<Uuid>,
    pub tenant_id: Uuid,
    #[graphql(flatten)]
    pub target: StorageTargetInput,
}

/// What a custom field holds.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
#[graphql(name = "CustomFieldType")]
pub enum CustomFieldTypeGql {
    /// Free text (up to `length` characters).
    Text,
    Date,
    /// One of the field's `options`.
    #[graphql(name = "OPTION")]
    Choice,
}

/// A custom field's whole definition.
#[derive(Debug, InputObject)]
pub struct CustomFieldInput {
    /// Unique within the tenant (case-insensitive).
    pub name: String,
    pub description: Option<String>,
    pub field_type: CustomFieldTypeGql,
    /// The options of an OPTION field, in the order they are offered; only for OPTION.
    pub options: Option<Vec<String>>,
    /// The longest value of a TEXT field, in characters (null: 255); only for TEXT.
    pub length: Option<i32>,
    /// Whether users may change a call's value (otherwise only integrations set it).
    pub editable: bool,
    /// Offered as a filter in the advanced search.
    pub advanced_search: bool,
    /// Searched by the free-text search box (not for DATE fields).
    pub free_text_search: bool,
}

impl CustomFieldInput {
    /// The domain's definition; `field` is where the input was given, for the error.
    fn into_definition(self, field: &str) -> ApiResult<CustomFieldDefinition> {
        let options_field = format!("{field}.options");
        let field_type = match (self.field_type, self.options) {
            (CustomFieldTypeGql::Choice, Some(options)) => FieldType::Option { options },
            (CustomFieldTypeGql::Choice, None) => {
                return Err(ApiError::invalid_field(&options_field, "an OPTION field needs its options"))
            }
            (_, Some(_)) => return Err(ApiError::invalid_field(&options_field, "only OPTION fields have options")),
            (CustomFieldTypeGql::Text, None) => FieldType::Text,
            (CustomFieldTypeGql::Date, None) => FieldType::Date,
        };
        let length = match self.length {
            Some(length) => Some(not_negative(length, &format!("{field}.length"), "a length")?),
            None => None,
        };
        Ok(CustomFieldDefinition {
            name: self.name,
            description: self.description,
            field_type,
            length,
            editable: self.editable,
            search: SearchSettings { advanced_search: self.advanced_search, free_text: self.free_text_search },
        })
    }
}

/// A new custom field of a tenant.
#[derive(Debug, InputObject)]
pub struct AddCustomFieldInput {
    /// The new field's id (made here when left out).
    pub id: Option<Uuid>,
    pub tenant_id: Uuid,
    #[graphql(flatten)]
    pub definition: CustomFieldInput,
}

/// Whether one field of a layout shows.
#[derive(Debug, InputObject)]
pub struct FieldVisibilityInput {
    /// A built-in field's name (e.g. caller) or a custom field as custom:<id>.
    pub field: String,
    pub visible: bool,
}

/// An answer to a question and the share of the question's weight it earns.
#[derive(Debug, InputObject)]
pub struct AnswerInput {
    pub text: String,
    /// In hundredths of a percent of the question's weight: 0 to 10000 (100 %).
    pub score_bp: i32,
}

/// A question, its weight in the form and its answers (2 to 20, one earning full marks).
#[derive(Debug, InputObject)]
pub struct QuestionInput {
    pub text: String,
    /// The question's share of the whole form, in hundredths of a percent; a form's weights total 10000.
    pub weight_bp: i32,
    pub answers: Vec<AnswerInput>,
}

/// A titled section of questions.
#[derive(Debug, InputObject)]
pub struct SectionInput {
    pub title: String,
    pub questions: Vec<QuestionInput>,
}

/// An evaluation form's whole definition.
#[derive(Debug, InputObject)]
pub struct EvaluationFormInput {
    /// Unique within the tenant (case-insensitive).
    pub name: String,
    pub description: Option<String>,
    pub sections: Vec<SectionInput>,
}

impl EvaluationFormInput {
    /// The domain's definition; `field` is where the input was given, for the error.
    fn into_definition(self, field: &str) -> ApiResult<FormDefinition> {
        let mut sections = Vec::with_capacity(self.sections.len());
        for (s, section) in self.sections.into_iter().enumerate() {
            let mut questions = Vec::with_capacity(section.questions.len());
            for (q, question) in section.questions.into_iter().enumerate() {
                let at = format!("{field}.sections[{s}].questions[{q}]");
                let weight_bp = not_negative(question.weight_bp, &format!("{at}.weightBp"), "a weight")?;
                let mut answers = Vec::with_capacity(question.answers.len());
                for (a, answer) in question.answers.into_iter().enumerate() {
                    let score_bp = not_negative(answer.score_bp, &format!("{at}.answers[{a}].scoreBp"), "a score")?;
                    answers.push(Answer { text: answer.text, score_bp });
                }
                questions.push(Question { text: question.text, weight_bp, answers });
            }
            sections.push(Section { title: section.title, questions });
        }
        Ok(FormDefinition { name: self.name, description: self.description, sections })
    }
}

/// A new evaluation form of a tenant.
#[derive(Debug, InputObject)]
pub struct CreateEvaluationFormInput {
    /// The new form's id (made here when left out).
    pub id: Option<Uuid>,
    pub tenant_id: Uuid,
    #[graphql(flatten)]
    pub form: EvaluationFormInput,
}

async fn storage(
    ctx: &Context<'_>,
    target_id: Uuid,
    request: StorageTargetRequest,
) -> async_graphql::Result<MutationResult> {
    run(ctx, Changed::StorageTarget, target_id, AdminCommand::StorageTarget { target_id, request }).await
}

async fn custom_field(
    ctx: &Context<'_>,
    field_id: Uuid,
    command: CustomFieldCommand,
) -> async_graphql::Result<MutationResult> {
    run(ctx, Changed::CustomField, field_id, AdminCommand::CustomField { field_id, command }).await
}

async fn form(
    ctx: &Context<'_>,
    form_id: Uuid,
    request: EvaluationFormRequest,
) -> async_graphql::Result<MutationResult> {
    run(ctx, Changed::EvaluationForm, form_id, AdminCommand::EvaluationForm { form_id, request }).await
}

#[derive(Debug, Default)]
pub struct ConfigMutation;

#[Object]
impl ConfigMutation {
    /// Adds a storage target to a tenant; its credentials are sealed and never shown again.
    async fn add_storage_target(
        &self,
        ctx: &Context<'_>,
        input: AddStorageTargetInput,
    ) -> async_graphql::Result<MutationResult> {
        let target_id = new_id(input.id);
        let StorageTargetInput { name, settings } = input.target;
        let settings = settings.into_settings("input.settings", Purpose::Add)?;
        storage(ctx, target_id, StorageTargetRequest::Add { tenant_id: input.tenant_id, name, settings }).await
    }

    /// Replaces a storage target's name and settings; a credential left out keeps the stored one.
    async fn edit_storage_target(
        &self,
        ctx: &Context<'_>,
        target_id: Uuid,
        input: StorageTargetInput,
    ) -> async_graphql::Result<MutationResult> {
        let settings = input.settings.into_settings("input.settings", Purpose::Edit)?;
        storage(ctx, target_id, StorageTargetRequest::Edit { name: input.name, settings }).await
    }

    /// Tests a storage target's connection (write, read back, delete a small file) and records the outcome.
    async fn test_storage_target(&self, ctx: &Context<'_>, target_id: Uuid) -> async_graphql::Result<MutationResult> {
        storage(ctx, target_id, StorageTargetRequest::Test).await
    }

    /// Deletes a storage target; it can be restored until it is purged.
    async fn delete_storage_target(&self, ctx: &Context<'_>, target_id: Uuid) -> async_graphql::Result<MutationResult> {
        storage(ctx, target_id, StorageTargetRequest::Delete).await
    }

    /// Undoes the deletion of a storage target.
    async fn restore_storage_target(
        &self,
        ctx: &Context<'_>,
        target_id: Uuid,
    ) -> async_graphql::Result<MutationResult> {
        storage(ctx, target_id, StorageTargetRequest::Restore).await
    }

    /// Removes a deleted storage target for good, with its credentials.
    async fn purge_storage_target(&self, ctx: &Context<'_>, target_id: Uuid) -> async_graphql::Result<MutationResult> {
        storage(ctx, target_id, StorageTargetRequest::Purge).await
    }

    /// Adds a custom field to a tenant's calls.
    async fn add_custom_field(
        &self,
        ctx: &Context<'_>,
        input: AddCustomFieldInput,
    ) -> async_graphql::Result<MutationResult> {
        let field_id = new_id(input.id);
        let definition = input.definition.into_definition("input")?;
        custom_field(ctx, field_id, CustomFieldCommand::AddCustomField { tenant_id: input.tenant_id, definition }).await
    }

    /// Replaces a custom field's whole definition.
    async fn edit_custom_field(
        &self,
        ctx: &Context<'_>,
        field_id: Uuid,
        input: CustomFieldInput,
    ) -> async_graphql::Result<MutationResult> {
        let definition = input.into_definition("input")?;
        custom_field(ctx, field_id, CustomFieldCommand::EditCustomField { definition }).await
    }

    /// Deletes a custom field; it keeps its name and can be restored until it is purged.
    async fn delete_custom_field(&self, ctx: &Context<'_>, field_id: Uuid) -> async_graphql::Result<MutationResult> {
        custom_field(ctx, field_id, CustomFieldCommand::DeleteCustomField).await
    }

    /// Undoes the deletion of a custom field.
    async fn restore_custom_field(&self, ctx: &Context<'_>, field_id: Uuid) -> async_graphql::Result<MutationResult> {
        custom_field(ctx, field_id, CustomFieldCommand::RestoreCustomField).await
    }

    /// Removes a deleted custom field for good and frees its name.
    async fn purge_custom_field(&self, ctx: &Context<'_>, field_id: Uuid) -> async_graphql::Result<MutationResult> {
        custom_field(ctx, field_id, CustomFieldCommand::PurgeCustomField).await
    }

    /// Shows or hides the listed fields of one of a tenant's views; the fields not listed keep their setting.
    async fn set_field_visibility(
        &self,
        ctx: &Context<'_>,
        tenant_id: Uuid,
        layout: LayoutGql,
        fields: Vec<FieldVisibilityInput>,
    ) -> async_graphql::Result<MutationResult> {
        let mut visible = BTreeMap::new();
        for (i, shown) in fields.into_iter().enumerate() {
            if visible.insert(shown.field.clone(), shown.visible).is_some() {
                let message = format!("{:?} is listed twice", shown.field);
                return Err(ApiError::invalid_field(&format!("fields[{i}].field"), message).into());
            }
        }
        let command = FieldVisibilityCommand::SetLayoutVisibility { tenant_id, layout: layout.into(), visible };
        run(ctx, Changed::FieldVisibility, tenant_id, AdminCommand::FieldVisibility { command }).await
    }

    /// Creates an evaluation form in a tenant.
    async fn create_evaluation_form(
        &self,
        ctx: &Context<'_>,
        input: CreateEvaluationFormInput,
    ) -> async_graphql::Result<MutationResult> {
        let form_id = new_id(input.id);
        let definition = input.form.into_definition("input")?;
        form(ctx, form_id, EvaluationFormRequest::Create { tenant_id: input.tenant_id, definition }).await
    }

    /// Replaces an evaluation form's whole definition, as a new version unless nothing changed.
    async fn revise_evaluation_form(
        &self,
        ctx: &Context<'_>,
        form_id: Uuid,
        input: EvaluationFormInput,
    ) -> async_graphql::Result<MutationResult> {
        let definition = input.into_definition("input")?;
        form(ctx, form_id, EvaluationFormRequest::Revise { definition }).await
    }

    /// Creates an evaluation form (id, or a new one) as a copy of another of the same tenant, named name.
    async fn clone_evaluation_form(
        &self,
        ctx: &Context<'_>,
        id: Option<Uuid>,
        source_id: Uuid,
        name: String,
    ) -> async_graphql::Result<MutationResult> {
        form(ctx, new_id(id), EvaluationFormRequest::Clone { source_id, name }).await
    }

    /// Deletes an evaluation form; it can be restored until it is purged.
    async fn delete_evaluation_form(&self, ctx: &Context<'_>, form_id: Uuid) -> async_graphql::Result<MutationResult> {
        form(ctx, form_id, EvaluationFormRequest::Delete).await
    }

    /// Undoes the deletion of an evaluation form.
    async fn restore_evaluation_form(&self, ctx: &Context<'_>, form_id: Uuid) -> async_graphql::Result<MutationResult> {
        form(ctx, form_id, EvaluationFormRequest::Restore).await
    }

    /// Removes a deleted evaluation form for good and frees its name.
    async fn purge_evaluation_form(&self, ctx: &Context<'_>, form_id: Uuid) -> async_graphql::Result<MutationResult> {
        form(ctx, form_id, EvaluationFormRequest::Purge).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(error: ApiError) -> Option<String> {
        match error {
            ApiError::Invalid { field, .. } => field,
            other => panic!("not an input error: {other:?}"),
        }
    }

    fn ftp(password: Option<&str>, port: i32) -> FtpSettingsInput {
        FtpSettingsInput {
            host: "ftp.example.com".into(),
            port,
            username: "rec".into(),
            password: password.map(SecretString::from),
            directory: String::new(),
            tls: true,
        }
    }

    fn settings(ftp_settings: Option<FtpSettingsInput>, local: Option<&str>) -> StorageSettingsInput {
        StorageSettingsInput {
            local_filesystem: local.map(|path| LocalFilesystemSettingsInput { path: path.into() }),
            s3: None,
            ftp: ftp_settings,
            sftp: None,
        }
    }

    #[test]
    fn storage_settings_take_exactly_one_kind() {
        let none = settings(None, None).into_settings("input.settings", Purpose::Add);
        assert_eq!(none.err().and_then(field_of).as_deref(), Some("input.settings"));
        let two = settings(Some(ftp(Some("pw"), 21)), Some("/srv")).into_settings("input.settings", Purpose::Add);
        assert_eq!(two.err().and_then(field_of).as_deref(), Some("input.settings"));
        let one = settings(None, Some("/srv")).into_settings("input.settings", Purpose::Add);
        assert!(matches!(one, Ok(StorageSettings::LocalFilesystem { path }) if path == "/srv"));
    }

    #[test]
    fn a_new_target_needs_its_secret_and_an_edit_may_keep_it() {
        let added = settings(Some(ftp(Some(""), 21)), None).into_settings("input.settings", Purpose::Add);
        assert_eq!(added.err().and_then(field_of).as_deref(), Some("input.settings.ftp.password"));
        let edited = settings(Some(ftp(Some(""), 21)), None).into_settings("input.settings", Purpose::Edit);
        assert!(matches!(edited, Ok(StorageSettings::Ftp { password: None, .. })), "{edited:?}");
        let bad_port = settings(Some(ftp(Some("pw"), 70_000)), None).into_settings("input.settings", Purpose::Add);
        assert_eq!(bad_port.err().and_then(field_of).as_deref(), Some("input.settings.ftp.port"));
    }

    #[test]
    fn a_negative_weight_or_score_names_its_place_in_the_form() {
        let form = |weight_bp, score_bp| EvaluationFormInput {
            name: "Quality".into(),
            description: None,
            sections: vec![SectionInput {
                title: "Greeting".into(),
                questions: vec![QuestionInput {
                    text: "Greeted the caller?".into(),
                    weight_bp,
                    answers: vec![AnswerInput { text: "Yes".into(), score_bp }],
                }],
            }],
        };
        let weight = form(-1, 10_000).into_definition("input");
        assert_eq!(weight.err().and_then(field_of).as_deref(), Some("input.sections[0].questions[0].weightBp"));
        let score = form(10_000, -5).into_definition("input");
        assert_eq!(
            score.err().and_then(field_of).as_deref(),
            Some("input.sections[0].questions[0].answers[0].scoreBp")
        );
        let fine = form(10_000, 10_000).into_definition("input").expect("valid");
        assert_eq!(fine.sections[0].questions[0].weight_bp, 10_000);
    }

    #[test]
    fn options_belong_to_option_fields_only() {
        let field = |field_type, options: Option<Vec<String>>| CustomFieldInput {
            name: "Outcome".into(),
            description: None,
            field_type,
            options,
            length: None,
            editable: true,
            advanced_search: false,
            free_text_search: false,
        };
        let missing = field(CustomFieldTypeGql::Choice, None).into_definition("input");
        assert_eq!(missing.err().and_then(field_of).as_deref(), Some("input.options"));
        let stray = field(CustomFieldTypeGql::Date, Some(vec!["x".into()])).into_definition("input");
        assert_eq!(stray.err().and_then(field_of).as_deref(), Some("input.options"));
        let choice = field(CustomFieldTypeGql::Choice, Some(vec!["Sale".into()])).into_definition("input");
        assert_eq!(choice.map(|d| d.field_type), Ok(FieldType::Option { options: vec!["Sale".into()] }));
    }
}
