//! The evaluation form aggregate (keyed by form id, belonging to a tenant): the sections, questions and
//! answers supervisors score agents' calls with, versioned so evaluations can name the version they used.
//! Percentages are integer basis points, never floats; names are unique within the tenant (case-insensitive).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainEvent};
use crate::index::{moves, IndexChange, IndexKey, Namespace};
use crate::lifecycle::{lifecycle_refusals, Lifecycle};
use crate::names::{display_name, unique_key, NameError};

/// 100 % in basis points (hundredths of a percent).
pub const FULL_BP: u32 = 10_000;
pub const MAX_SECTIONS: usize = 50;
pub const MAX_QUESTIONS_PER_SECTION: usize = 100;
pub const MIN_ANSWERS: usize = 2;
pub const MAX_ANSWERS: usize = 20;
pub const MAX_TEXT_CHARS: usize = 1000;
pub const MAX_DESCRIPTION_CHARS: usize = 2000;

/// What a form asks. Valid (and normalised) only as returned by [`FormDefinition::validate`].
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormDefinition {
    pub name: String,
    pub description: Option<String>,
    pub sections: Vec<Section>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    pub title: String,
    pub questions: Vec<Question>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    pub text: String,
    /// The question's share of the whole form, in basis points; the weights of a form total 10_000.
    pub weight_bp: u32,
    pub answers: Vec<Answer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub text: String,
    /// The share of the question's weight this answer earns, in basis points (0 to 10_000).
    pub score_bp: u32,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationForm {
    state: Lifecycle,
    tenant_id: Option<Uuid>,
    definition: FormDefinition,
    version: u32,
    cloned_from: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EvaluationFormCommand {
    CreateForm {
        tenant_id: Uuid,
        definition: FormDefinition,
    },
    /// Replaces the whole definition; a new version unless nothing changed.
    ReviseForm {
        definition: FormDefinition,
    },
    /// Decided on the new form. `source`: the current definition of form `source_id` (a fact the command
    /// service looks up); the clone takes it under `name`.
    CloneForm {
        tenant_id: Uuid,
        source_id: Uuid,
        source: FormDefinition,
        name: String,
    },
    DeleteForm,
    /// Undoes a delete.
    RestoreForm,
    /// Removes a deleted form for good and frees its name.
    PurgeForm,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EvaluationFormEvent {
    FormCreated { tenant_id: Uuid, definition: FormDefinition, cloned_from: Option<Uuid> },
    FormRevised { definition: FormDefinition, version: u32 },
    FormDeleted,
    FormRestored,
    FormPurged,
}

impl DomainEvent for EvaluationFormEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::FormCreated { .. } => "FormCreated",
            Self::FormRevised { .. } => "FormRevised",
            Self::FormDeleted => "FormDeleted",
            Self::FormRestored => "FormRestored",
            Self::FormPurged => "FormPurged",
        }
    }

    fn event_version(&self) -> &'static str {
        "1"
    }
}

/// What is wrong with a piece of text (a question, an answer, the description).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters, has {chars}")]
    TooLong { max: usize, chars: usize },
    #[error("must not contain control characters")]
    ControlCharacter,
}

/// Why a command was refused. `section`, `question` and `answer` are 0-based positions in the definition;
/// the messages count from 1, as the person who wrote the form does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvaluationFormError {
    #[error("this evaluation form already exists")]
    AlreadyExists,
    #[error("no such evaluation form")]
    NotFound,
    #[error("this evaluation form is deleted; restore it first")]
    Deleted,
    #[error("this evaluation form was purged")]
    Purged,
    #[error("this evaluation form is not deleted")]
    NotDeleted,
    #[error("invalid form name: {0}")]
    InvalidName(NameError),
    #[error("the description {0}")]
    InvalidDescription(TextError),
    #[error("a form needs 1 to {MAX_SECTIONS} sections, this one has {count}")]
    SectionCount { count: usize },
    #[error("section {}: invalid title: {error}", .section + 1)]
    InvalidSectionTitle { section: usize, error: NameError },
    #[error("section {}: a section needs 1 to {MAX_QUESTIONS_PER_SECTION} questions, this one has {count}", .section + 1)]
    QuestionCount { section: usize, count: usize },
    #[error("section {}, question {}: the question text {error}", .section + 1, .question + 1)]
    InvalidQuestionText { section: usize, question: usize, error: TextError },
    #[error("section {}, question {}: the weight must be more than 0 %", .section + 1, .question + 1)]
    ZeroWeight { section: usize, question: usize },
    #[error("section {}, question {}: a question needs {MIN_ANSWERS} to {MAX_ANSWERS} answers, this one has {count}", .section + 1, .question + 1)]
    AnswerCount { section: usize, question: usize, count: usize },
    #[error("section {}, question {}, answer {}: the answer text {error}", .section + 1, .question + 1, .answer + 1)]
    InvalidAnswerText { section: usize, question: usize, answer: usize, error: TextError },
    #[error("section {}, question {}, answer {}: the score is {} %, at most 100 %", .section + 1, .question + 1, .answer + 1, percent(u64::from(*.score_bp)))]
    ScoreAbove100 { section: usize, question: usize, answer: usize, score_bp: u32 },
    #[error("section {}, question {}, answer {}: {text:?} is already an answer to this question", .section + 1, .question + 1, .answer + 1)]
    DuplicateAnswer { section: usize, question: usize, answer: usize, text: String },
    #[error("section {}, question {}: at least one answer must earn full marks (100 %)", .section + 1, .question + 1)]
    NoFullMarksAnswer { section: usize, question: usize },
    #[error("the question weights total {} %, they must total exactly 100 %", percent(*.total_bp))]
    WeightsDoNotTotal100 { total_bp: u64 },
}

lifecycle_refusals!(EvaluationFormError);

/// Basis points as a percentage for people: 9999 → `99.99`.
fn percent(bp: u64) -> String {
    format!("{}.{:02}", bp / 100, bp % 100)
}

/// Trimmed text of 1 to `max` characters without control characters.
fn text(raw: &str, max: usize) -> Result<String, TextError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(TextError::Empty);
    }
    let chars = text.chars().count();
    if chars > max {
        return Err(TextError::TooLong { max, chars });
    }
    if text.chars().any(char::is_control) {
        return Err(TextError::ControlCharacter);
    }
    Ok(text.to_owned())
}

/// A description may span lines, so line breaks and tabs are allowed; other control characters are not.
fn description(raw: Option<String>) -> Result<Option<String>, TextError> {
    let Some(description) = raw.as_deref().map(str::trim).filter(|d| !d.is_empty()) else {
        return Ok(None);
    };
    let chars = description.chars().count();
    if chars > MAX_DESCRIPTION_CHARS {
        return Err(TextError::TooLong { max: MAX_DESCRIPTION_CHARS, chars });
    }
    if description.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(TextError::ControlCharacter);
    }
    Ok(Some(description.to_owned()))
}

impl FormDefinition {
    /// The definition with its texts trimmed (an empty description becomes none), or the first thing wrong
    /// with it, in reading order; the weight total is checked last, once every question is well formed.
    pub fn validate(self) -> Result<FormDefinition, EvaluationFormError> {
        use EvaluationFormError as E;
        let name = display_name(&self.name).map_err(E::InvalidName)?;
        let description = description(self.description).map_err(E::InvalidDescription)?;
        if !(1..=MAX_SECTIONS).contains(&self.sections.len()) {
            return Err(E::SectionCount { count: self.sections.len() });
        }
        let mut total_bp: u64 = 0;
        let mut sections = Vec::with_capacity(self.sections.len());
        for (s, section) in self.sections.into_iter().enumerate() {
            let title = display_name(&section.title).map_err(|error| E::InvalidSectionTitle { section: s, error })?;
            if !(1..=MAX_QUESTIONS_PER_SECTION).contains(&section.questions.len()) {
                return Err(E::QuestionCount { section: s, count: section.questions.len() });
            }
            let mut questions = Vec::with_capacity(section.questions.len());
            for (q, question) in section.questions.into_iter().enumerate() {
                let question = validate_question(question, s, q)?;
                total_bp += u64::from(question.weight_bp);
                questions.push(question);
            }
            sections.push(Section { title, questions });
        }
        if total_bp != u64::from(FULL_BP) {
            return Err(E::WeightsDoNotTotal100 { total_bp });
        }
        Ok(FormDefinition { name, description, sections })
    }
}

fn validate_question(question: Question, section: usize, q: usize) -> Result<Question, EvaluationFormError> {
    use EvaluationFormError as E;
    let question_text =
        text(&question.text, MAX_TEXT_CHARS).map_err(|error| E::InvalidQuestionText { section, question: q, error })?;
    if question.weight_bp == 0 {
        return Err(E::ZeroWeight { section, question: q });
    }
    if !(MIN_ANSWERS..=MAX_ANSWERS).contains(&question.answers.len()) {
        return Err(E::AnswerCount { section, question: q, count: question.answers.len() });
    }
    let mut answers: Vec<Answer> = Vec::with_capacity(question.answers.len());
    for (a, answer) in question.answers.into_iter().enumerate() {
        let answer_text = text(&answer.text, MAX_TEXT_CHARS).map_err(|error| E::InvalidAnswerText {
            section,
            question: q,
            answer: a,
            error,
        })?;
        if answer.score_bp > FULL_BP {
            return Err(E::ScoreAbove100 { section, question: q, answer: a, score_bp: answer.score_bp });
        }
        if answers.iter().any(|earlier| unique_key(&earlier.text) == unique_key(&answer_text)) {
            return Err(E::DuplicateAnswer { section, question: q, answer: a, text: answer_text });
        }
        answers.push(Answer { text: answer_text, score_bp: answer.score_bp });
    }
    if !answers.iter().any(|answer| answer.score_bp == FULL_BP) {
        return Err(E::NoFullMarksAnswer { section, question: q });
    }
    Ok(Question { text: question_text, weight_bp: question.weight_bp, answers })
}

impl EvaluationForm {
    /// The form is usable: created, not deleted, not purged.
    pub fn exists(&self) -> bool {
        self.state == Lifecycle::Active
    }

    /// The form is in the bin: it can be restored or purged.
    pub fn is_deleted(&self) -> bool {
        self.state == Lifecycle::Deleted
    }

    pub fn tenant_id(&self) -> Option<Uuid> {
        self.tenant_id
    }

    /// The current definition (empty before creation).
    pub fn definition(&self) -> &FormDefinition {
        &self.definition
    }

    /// 1 on creation, one more with every revision; 0 before creation.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The form this one was cloned from, if any.
    pub fn cloned_from(&self) -> Option<Uuid> {
        self.cloned_from
    }

    fn existing(&self) -> Result<(), EvaluationFormError> {
        Ok(self.state.require_active()?)
    }

    /// Restore and purge act on deleted forms only.
    fn deleted(&self) -> Result<(), EvaluationFormError> {
        Ok(self.state.require_deleted()?)
    }

    fn new_form(&self) -> Result<(), EvaluationFormError> {
        match self.state {
            Lifecycle::New => Ok(()),
            Lifecycle::Active | Lifecycle::Deleted => Err(EvaluationFormError::AlreadyExists),
            Lifecycle::Purged => Err(EvaluationFormError::Purged),
        }
    }

    fn name_key(&self, name: &str) -> Option<IndexKey> {
        self.tenant_id.map(|tenant| IndexKey::name(Namespace::EvaluationFormName(tenant), name))
    }
}

impl Aggregate for EvaluationForm {
    const TYPE: &'static str = "EvaluationForm";
    type Command = EvaluationFormCommand;
    type Event = EvaluationFormEvent;
    type Error = EvaluationFormError;
    type Services = ();

    async fn decide(
        &self,
        command: EvaluationFormCommand,
        _: &(),
    ) -> Result<Vec<EvaluationFormEvent>, EvaluationFormError> {
        use EvaluationFormCommand as C;
        use EvaluationFormEvent as E;
        match command {
            C::CreateForm { tenant_id, definition } => {
                self.new_form()?;
                Ok(vec![E::FormCreated { tenant_id, definition: definition.validate()?, cloned_from: None }])
            }
            C::ReviseForm { definition } => {
                self.existing()?;
                let definition = definition.validate()?;
                Ok(if definition == self.definition {
                    vec![]
                } else {
                    vec![E::FormRevised { definition, version: self.version + 1 }]
                })
            }
            C::CloneForm { tenant_id, source_id, source, name } => {
                self.new_form()?;
                let definition = FormDefinition { name, ..source }.validate()?;
                Ok(vec![E::FormCreated { tenant_id, definition, cloned_from: Some(source_id) }])
            }
            C::DeleteForm => {
                self.existing()?;
                Ok(vec![E::FormDeleted])
            }
            C::RestoreForm => {
                self.deleted()?;
                Ok(vec![E::FormRestored])
            }
            C::PurgeForm => {
                self.deleted()?;
                Ok(vec![E::FormPurged])
            }
        }
    }

    fn apply(&mut self, event: EvaluationFormEvent) {
        use EvaluationFormEvent as E;
        match event {
            E::FormCreated { tenant_id, definition, cloned_from } => {
                self.state = Lifecycle::Active;
                self.tenant_id = Some(tenant_id);
                self.definition = definition;
                self.version = 1;
                self.cloned_from = cloned_from;
            }
            E::FormRevised { definition, version } => {
                self.definition = definition;
                self.version = version;
            }
            E::FormDeleted => self.state = Lifecycle::Deleted,
            E::FormRestored => self.state = Lifecycle::Active,
            E::FormPurged => self.state = Lifecycle::Purged,
        }
    }

    /// The name is claimed on creation and moved by a revision that renames; a deleted form keeps it so a
    /// restore cannot collide, and only a purge frees it.
    fn index_changes(&self, event: &EvaluationFormEvent) -> Vec<IndexChange> {
        use EvaluationFormEvent as E;
        match event {
            E::FormCreated { tenant_id, definition, .. } => {
                vec![IndexChange::Claim(IndexKey::name(Namespace::EvaluationFormName(*tenant_id), &definition.name))]
            }
            E::FormRevised { definition, .. } => {
                moves(&self.name_key(&self.definition.name), &self.name_key(&definition.name))
            }
            E::FormPurged => self.name_key(&self.definition.name).map(IndexChange::Release).into_iter().collect(),
            E::FormDeleted | E::FormRestored => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{given, run, when};

    const TENANT: Uuid = Uuid::from_u128(7);
    const SOURCE: Uuid = Uuid::from_u128(99);

    type Form = EvaluationForm;
    type Command = EvaluationFormCommand;
    type Event = EvaluationFormEvent;
    type Error = EvaluationFormError;

    fn answer(text: &str, score_bp: u32) -> Answer {
        Answer { text: text.into(), score_bp }
    }

    fn yes_no(text: &str, weight_bp: u32) -> Question {
        Question { text: text.into(), weight_bp, answers: vec![answer("Yes", FULL_BP), answer("No", 0)] }
    }

    /// A valid form: "Greeting" (30 % + 20 %) and "Resolution" (50 %).
    fn form(name: &str) -> FormDefinition {
        FormDefinition {
            name: name.into(),
            description: Some("How we answer the phone".into()),
            sections: vec![
                Section {
                    title: "Greeting".into(),
                    questions: vec![
                        yes_no("Did the agent give their name?", 3000),
                        yes_no("Was the agent polite?", 2000),
                    ],
                },
                Section {
                    title: "Resolution".into(),
                    questions: vec![Question {
                        text: "Was the problem solved?".into(),
                        weight_bp: 5000,
                        answers: vec![answer("Yes", FULL_BP), answer("Partly", 5000), answer("No", 0)],
                    }],
                },
            ],
        }
    }

    /// One section of questions with these weights, each answered yes or no.
    fn weighted(weights: &[u32]) -> FormDefinition {
        let questions = weights.iter().enumerate().map(|(i, w)| yes_no(&format!("Question {}", i + 1), *w)).collect();
        FormDefinition {
            name: "Weights".into(),
            description: None,
            sections: vec![Section { title: "Only".into(), questions }],
        }
    }

    fn create(definition: FormDefinition) -> Command {
        Command::CreateForm { tenant_id: TENANT, definition }
    }

    fn created() -> Vec<Event> {
        vec![Event::FormCreated { tenant_id: TENANT, definition: form("Sales QA"), cloned_from: None }]
    }

    fn deleted() -> Vec<Event> {
        let mut events = created();
        events.push(Event::FormDeleted);
        events
    }

    fn purged() -> Vec<Event> {
        let mut events = deleted();
        events.push(Event::FormPurged);
        events
    }

    /// What creating a form with `definition` is refused with (panics if it is accepted).
    fn refusal(definition: FormDefinition) -> Error {
        when::<Form>([], create(definition), &()).expect_err("the definition is refused")
    }

    fn clone_of(definition: FormDefinition, name: &str) -> Command {
        Command::CloneForm { tenant_id: TENANT, source_id: SOURCE, source: definition, name: name.into() }
    }

    #[test]
    fn a_form_is_created_with_its_texts_trimmed_at_version_1() {
        let mut raw = form("  Sales QA  ");
        raw.description = Some("  How we answer the phone \n".into());
        raw.sections[0].title = " Greeting ".into();
        raw.sections[0].questions[0].text = "  Did the agent give their name?\t".into();
        raw.sections[1].questions[0].answers[1].text = " Partly ".into();
        let events = when::<Form>([], create(raw), &());
        assert_eq!(events, Ok(created()));
        let state = given::<Form>(created());
        assert!(state.exists() && !state.is_deleted());
        assert_eq!((state.tenant_id(), state.version(), state.cloned_from()), (Some(TENANT), 1, None));
        assert_eq!(state.definition(), &form("Sales QA"));
    }

    #[test]
    fn an_empty_description_is_none() {
        let mut raw = form("Sales QA");
        raw.description = Some("   ".into());
        let Ok(events) = when::<Form>([], create(raw), &()) else { panic!("refused") };
        assert!(matches!(&events[..], [Event::FormCreated { definition, .. }] if definition.description.is_none()));
    }

    #[test]
    fn a_form_cannot_be_created_twice() {
        assert_eq!(when::<Form>(created(), create(form("Other")), &()), Err(Error::AlreadyExists));
        assert_eq!(when::<Form>(deleted(), create(form("Other")), &()), Err(Error::AlreadyExists));
        assert_eq!(when::<Form>(purged(), create(form("Other")), &()), Err(Error::Purged));
    }

    #[test]
    fn question_weights_must_total_exactly_100_percent() {
        assert_eq!(refusal(weighted(&[5000, 4999])), Error::WeightsDoNotTotal100 { total_bp: 9999 });
        assert_eq!(refusal(weighted(&[5000, 5001])), Error::WeightsDoNotTotal100 { total_bp: 10_001 });
        assert_eq!(
            refusal(weighted(&[u32::MAX, u32::MAX])),
            Error::WeightsDoNotTotal100 { total_bp: 2 * 4_294_967_295 }
        );
        assert!(when::<Form>([], create(weighted(&[3333, 3333, 3334])), &()).is_ok());
        assert!(when::<Form>([], create(weighted(&[10_000])), &()).is_ok());
        // Across sections, not per section.
        let mut two = form("Two sections");
        two.sections[1].questions[0].weight_bp = 4999;
        assert_eq!(refusal(two), Error::WeightsDoNotTotal100 { total_bp: 9999 });
    }

    #[test]
    fn every_question_weighs_something() {
        assert_eq!(refusal(weighted(&[10_000, 0])), Error::ZeroWeight { section: 0, question: 1 });
    }

    #[test]
    fn every_question_needs_an_answer_earning_full_marks() {
        let mut partial = form("Sales QA");
        partial.sections[1].questions[0].answers[0].score_bp = 9999;
        assert_eq!(refusal(partial), Error::NoFullMarksAnswer { section: 1, question: 0 });
        let mut above = form("Sales QA");
        above.sections[0].questions[1].answers[1].score_bp = 10_001;
        assert_eq!(refusal(above), Error::ScoreAbove100 { section: 0, question: 1, answer: 1, score_bp: 10_001 });
    }

    #[test]
    fn a_question_has_2_to_20_answers() {
        let mut one = form("Sales QA");
        one.sections[0].questions[1].answers.truncate(1);
        assert_eq!(refusal(one), Error::AnswerCount { section: 0, question: 1, count: 1 });
        let many = |n: u32| {
            let mut def = weighted(&[10_000]);
            def.sections[0].questions[0].answers =
                (0..n).map(|i| answer(&format!("Answer {i}"), FULL_BP - i * 500)).collect();
            def
        };
        assert!(when::<Form>([], create(many(20)), &()).is_ok());
        assert!(when::<Form>([], create(many(2)), &()).is_ok());
        assert_eq!(refusal(many(21)), Error::AnswerCount { section: 0, question: 0, count: 21 });
    }

    #[test]
    fn answers_to_one_question_are_unique_ignoring_case() {
        let mut duplicate = form("Sales QA");
        duplicate.sections[1].questions[0].answers[2].text = " YES ".into();
        assert_eq!(
            refusal(duplicate),
            Error::DuplicateAnswer { section: 1, question: 0, answer: 2, text: "YES".into() }
        );
        // The same answers to different questions are fine: every question of `form` has a "Yes".
        assert!(when::<Form>([], create(form("Sales QA")), &()).is_ok());
    }

    #[test]
    fn a_form_has_1_to_50_sections_of_1_to_100_questions() {
        let sections = |n: usize| FormDefinition {
            name: "Sections".into(),
            description: None,
            sections: (0..n)
                .map(|i| Section { title: format!("Section {i}"), questions: vec![yes_no("Q", FULL_BP / 50)] })
                .collect(),
        };
        assert!(when::<Form>([], create(sections(50)), &()).is_ok());
        assert_eq!(refusal(sections(51)), Error::SectionCount { count: 51 });
        assert_eq!(refusal(sections(0)), Error::SectionCount { count: 0 });
        assert!(when::<Form>([], create(weighted(&[100; 100])), &()).is_ok());
        assert_eq!(refusal(weighted(&[100; 101])), Error::QuestionCount { section: 0, count: 101 });
        let mut empty = form("Sales QA");
        empty.sections[1].questions.clear();
        assert_eq!(refusal(empty), Error::QuestionCount { section: 1, count: 0 });
    }

    #[test]
    fn names_and_titles_are_display_names() {
        assert_eq!(refusal(form("  ")), Error::InvalidName(NameError::Empty));
        assert_eq!(refusal(form(&"x".repeat(101))), Error::InvalidName(NameError::TooLong));
        let mut title = form("Sales QA");
        title.sections[1].title = "a\u{7}b".into();
        assert_eq!(refusal(title), Error::InvalidSectionTitle { section: 1, error: NameError::ControlCharacter });
    }

    #[test]
    fn question_and_answer_texts_are_1_to_1000_printable_characters() {
        let with_question = |text: &str| {
            let mut def = form("Sales QA");
            def.sections[0].questions[1].text = text.into();
            def
        };
        assert!(when::<Form>([], create(with_question(&"é".repeat(1000))), &()).is_ok());
        assert_eq!(
            refusal(with_question(&"é".repeat(1001))),
            Error::InvalidQuestionText {
                section: 0,
                question: 1,
                error: TextError::TooLong { max: 1000, chars: 1001 }
            }
        );
        assert_eq!(
            refusal(with_question(" ")),
            Error::InvalidQuestionText { section: 0, question: 1, error: TextError::Empty }
        );
        assert_eq!(
            refusal(with_question("two\nlines")),
            Error::InvalidQuestionText { section: 0, question: 1, error: TextError::ControlCharacter }
        );
        let mut answer_text = form("Sales QA");
        answer_text.sections[1].questions[0].answers[1].text = String::new();
        assert_eq!(
            refusal(answer_text),
            Error::InvalidAnswerText { section: 1, question: 0, answer: 1, error: TextError::Empty }
        );
    }

    #[test]
    fn a_description_is_at_most_2000_characters_and_may_span_lines() {
        let with_description = |text: String| FormDefinition { description: Some(text), ..form("Sales QA") };
        assert!(when::<Form>([], create(with_description("a".repeat(2000))), &()).is_ok());
        assert!(when::<Form>([], create(with_description("first\r\n\tsecond".into())), &()).is_ok());
        assert_eq!(
            refusal(with_description("a".repeat(2001))),
            Error::InvalidDescription(TextError::TooLong { max: 2000, chars: 2001 })
        );
        assert_eq!(refusal(with_description("a\u{0}b".into())), Error::InvalidDescription(TextError::ControlCharacter));
    }

    #[test]
    fn messages_say_where_counting_from_one() {
        assert_eq!(
            Error::NoFullMarksAnswer { section: 0, question: 2 }.to_string(),
            "section 1, question 3: at least one answer must earn full marks (100 %)"
        );
        assert_eq!(
            Error::WeightsDoNotTotal100 { total_bp: 9999 }.to_string(),
            "the question weights total 99.99 %, they must total exactly 100 %"
        );
        assert_eq!(
            Error::ScoreAbove100 { section: 1, question: 0, answer: 3, score_bp: 10_050 }.to_string(),
            "section 2, question 1, answer 4: the score is 100.50 %, at most 100 %"
        );
    }

    #[test]
    fn validate_returns_the_normalised_definition() {
        let raw = FormDefinition { name: " Sales QA ".into(), description: Some(String::new()), ..form("x") };
        let expected = FormDefinition { description: None, ..form("Sales QA") };
        assert_eq!(raw.validate(), Ok(expected.clone()));
        assert_eq!(expected.clone().validate(), Ok(expected));
    }

    #[test]
    fn a_revision_replaces_the_definition_and_counts_the_version_up() {
        let revise = |definition| Command::ReviseForm { definition };
        let mut changed = form("Sales QA");
        changed.sections[0].questions[0].text = "Did the agent introduce themselves?".into();
        let first = Event::FormRevised { definition: changed.clone(), version: 2 };
        assert_eq!(when::<Form>(created(), revise(changed.clone()), &()), Ok(vec![first.clone()]));
        let mut revised = created();
        revised.push(first);
        assert_eq!(
            when::<Form>(revised.clone(), revise(form("Sales QA")), &()),
            Ok(vec![Event::FormRevised { definition: form("Sales QA"), version: 3 }])
        );
        assert_eq!(given::<Form>(revised).version(), 2);
    }

    #[test]
    fn a_revision_identical_after_trimming_is_no_event() {
        let mut same = form(" Sales QA ");
        same.sections[1].questions[0].answers[0].text = "Yes  ".into();
        assert_eq!(when::<Form>(created(), Command::ReviseForm { definition: same }, &()), Ok(vec![]));
    }

    #[test]
    fn an_invalid_revision_or_one_of_a_missing_deleted_or_purged_form_is_refused() {
        let revise = |definition| Command::ReviseForm { definition };
        assert_eq!(
            when::<Form>(created(), revise(weighted(&[1, 2])), &()),
            Err(Error::WeightsDoNotTotal100 { total_bp: 3 })
        );
        assert_eq!(when::<Form>([], revise(form("x")), &()), Err(Error::NotFound));
        assert_eq!(when::<Form>(deleted(), revise(form("x")), &()), Err(Error::Deleted));
        assert_eq!(when::<Form>(purged(), revise(form("x")), &()), Err(Error::Purged));
    }

    #[test]
    fn a_clone_takes_the_source_definition_under_its_own_name() {
        let expected = form("Sales QA (copy)");
        assert_eq!(
            when::<Form>([], clone_of(form("Sales QA"), " Sales QA (copy) "), &()),
            Ok(vec![Event::FormCreated { tenant_id: TENANT, definition: expected.clone(), cloned_from: Some(SOURCE) }])
        );
        let state =
            given::<Form>([Event::FormCreated { tenant_id: TENANT, definition: expected, cloned_from: Some(SOURCE) }]);
        assert_eq!((state.cloned_from(), state.version()), (Some(SOURCE), 1));
        assert_eq!(state.definition().name, "Sales QA (copy)");
        assert_eq!(state.definition().sections, form("Sales QA").sections);
    }

    #[test]
    fn a_clone_is_refused_onto_an_existing_form_or_with_an_invalid_name() {
        assert_eq!(when::<Form>(created(), clone_of(form("Sales QA"), "Copy"), &()), Err(Error::AlreadyExists));
        assert_eq!(when::<Form>(purged(), clone_of(form("Sales QA"), "Copy"), &()), Err(Error::Purged));
        assert_eq!(when::<Form>([], clone_of(form("Sales QA"), ""), &()), Err(Error::InvalidName(NameError::Empty)));
        assert_eq!(
            when::<Form>([], clone_of(weighted(&[9000]), "Copy"), &()),
            Err(Error::WeightsDoNotTotal100 { total_bp: 9000 })
        );
    }

    #[test]
    fn a_form_is_deleted_once_and_only_an_existing_one() {
        assert_eq!(when::<Form>(created(), Command::DeleteForm, &()), Ok(vec![Event::FormDeleted]));
        assert_eq!(when::<Form>(deleted(), Command::DeleteForm, &()), Err(Error::Deleted));
        assert_eq!(when::<Form>([], Command::DeleteForm, &()), Err(Error::NotFound));
        let state = given::<Form>(deleted());
        assert!(state.is_deleted() && !state.exists());
    }

    #[test]
    fn a_delete_is_undone_by_a_restore() {
        assert_eq!(when::<Form>(deleted(), Command::RestoreForm, &()), Ok(vec![Event::FormRestored]));
        assert_eq!(when::<Form>(created(), Command::RestoreForm, &()), Err(Error::NotDeleted));
        assert_eq!(when::<Form>([], Command::RestoreForm, &()), Err(Error::NotFound));
        let mut restored = deleted();
        restored.push(Event::FormRestored);
        let state = given::<Form>(restored);
        assert!(state.exists() && !state.is_deleted());
        assert_eq!((state.definition(), state.version()), (&form("Sales QA"), 1));
    }

    #[test]
    fn only_a_deleted_form_is_purged() {
        assert_eq!(when::<Form>(deleted(), Command::PurgeForm, &()), Ok(vec![Event::FormPurged]));
        assert_eq!(when::<Form>(created(), Command::PurgeForm, &()), Err(Error::NotDeleted));
        assert_eq!(when::<Form>([], Command::PurgeForm, &()), Err(Error::NotFound));
    }

    #[test]
    fn a_purged_form_refuses_everything() {
        let state = given::<Form>(purged());
        assert!(!state.exists() && !state.is_deleted());
        for command in [
            create(form("Sales QA")),
            Command::ReviseForm { definition: form("Sales QA") },
            clone_of(form("Sales QA"), "Copy"),
            Command::DeleteForm,
            Command::RestoreForm,
            Command::PurgeForm,
        ] {
            assert_eq!(when::<Form>(purged(), command.clone(), &()), Err(Error::Purged), "{command:?}");
        }
    }

    #[test]
    fn the_name_is_claimed_on_creation_and_by_a_clone() {
        let key = |name: &str| IndexKey::name(Namespace::EvaluationFormName(TENANT), name);
        assert_eq!(Form::default().index_changes(&created()[0]), vec![IndexChange::Claim(key("sales qa"))]);
        let clone = Event::FormCreated { tenant_id: TENANT, definition: form("Copy"), cloned_from: Some(SOURCE) };
        assert_eq!(Form::default().index_changes(&clone), vec![IndexChange::Claim(key("copy"))]);
    }

    #[test]
    fn a_revision_moves_the_name_only_when_it_renames() {
        let key = |name: &str| IndexKey::name(Namespace::EvaluationFormName(TENANT), name);
        let state = given::<Form>(created());
        let revised = |name: &str| Event::FormRevised { definition: form(name), version: 2 };
        assert_eq!(
            state.index_changes(&revised("Support QA")),
            vec![IndexChange::Release(key("sales qa")), IndexChange::Claim(key("support qa"))]
        );
        assert_eq!(state.index_changes(&revised("SALES qa")), vec![]);
        assert_eq!(state.index_changes(&revised("Sales QA")), vec![]);
    }

    #[test]
    fn a_deleted_form_keeps_its_name_until_it_is_purged() {
        let key = IndexKey::name(Namespace::EvaluationFormName(TENANT), "Sales QA");
        assert_eq!(given::<Form>(created()).index_changes(&Event::FormDeleted), vec![]);
        let state = given::<Form>(deleted());
        assert_eq!(state.index_changes(&Event::FormRestored), vec![]);
        assert_eq!(state.index_changes(&Event::FormPurged), vec![IndexChange::Release(key)]);
    }

    #[test]
    fn events_keep_their_shape_through_json() {
        let event = created().remove(0);
        let json = serde_json::to_string(&event).expect("serialises");
        assert_eq!(serde_json::from_str::<Event>(&json).expect("deserialises"), event);
        assert_eq!(event.event_type(), "FormCreated");
    }

    #[test]
    fn replaying_the_events_rebuilds_the_same_form() {
        let mut renamed = form("Support QA");
        renamed.sections[1].questions[0].weight_bp = 4000;
        renamed.sections[0].questions[1].weight_bp = 3000;
        let (state, events) = run::<Form>(
            [
                create(form("Sales QA")),
                Command::ReviseForm { definition: renamed.clone() },
                Command::ReviseForm { definition: renamed.clone() },
                Command::DeleteForm,
                Command::RestoreForm,
                Command::ReviseForm { definition: form("Support QA") },
            ],
            &(),
        );
        assert_eq!(given::<Form>(events.clone()), state);
        assert_eq!(events.len(), 5);
        assert_eq!((state.version(), state.definition(), state.exists()), (3, &form("Support QA"), true));

        let (clone, events) = run::<Form>([clone_of(renamed, "Copy"), Command::DeleteForm, Command::PurgeForm], &());
        assert_eq!(given::<Form>(events), clone);
        assert_eq!((clone.cloned_from(), clone.exists(), clone.is_deleted()), (Some(SOURCE), false, false));
    }
}
