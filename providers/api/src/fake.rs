//! An in-memory provider for tests and benchmarks of the planner and the apply
//! engine. It behaves like a well-mannered cloud: objects get sequential ids,
//! creation is idempotent per token, and every call is counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::Value;

use crate::{
    AttributeSchema, CreateRequest, Observed, Provider, ProviderError, SingleKind, UpdateRequest,
};

/// The fake's one kind, `thing`, and its attributes.
const THING: SingleKind = SingleKind {
    provider: "fake",
    kind: "thing",
    schema: &[
        AttributeSchema::force_new("image"),
        AttributeSchema::in_place("size"),
        AttributeSchema::in_place("tags"),
        AttributeSchema::in_place("peers"),
        AttributeSchema::computed("address"),
    ],
};

/// Objects by id, each with the token it was created with.
type Objects = BTreeMap<String, (String, Observed)>;

/// What a create of a thing with a given `image` does instead of the usual.
#[derive(Debug, Clone, Copy)]
enum Misbehaviour {
    /// Fails at once.
    Fail,
    /// Succeeds after this long.
    Slow(std::time::Duration),
    /// Panics (a provider bug, as the scheduler must survive it).
    Panic,
}

/// The fake provider. Its only kind is `thing`.
#[derive(Debug, Default)]
pub struct FakeProvider {
    objects: Mutex<Objects>,
    next_id: AtomicU64,
    calls: AtomicU64,
    misbehaviours: Mutex<BTreeMap<String, Misbehaviour>>,
}

impl FakeProvider {
    /// An empty fake cloud.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// How many API calls were made so far.
    #[must_use]
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// How many objects exist.
    #[must_use]
    pub fn len(&self) -> usize {
        self.objects.lock().map_or(0, |o| o.len())
    }

    /// Whether no object exists.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes every create whose `image` equals `image` fail.
    pub fn fail_creates_of(&self, image: &str) {
        self.misbehave(image, Misbehaviour::Fail);
    }

    /// Makes every create whose `image` equals `image` take `delay`.
    pub fn slow_creates_of(&self, image: &str, delay: std::time::Duration) {
        self.misbehave(image, Misbehaviour::Slow(delay));
    }

    /// Makes every create whose `image` equals `image` panic.
    pub fn panic_on_creates_of(&self, image: &str) {
        self.misbehave(image, Misbehaviour::Panic);
    }

    fn misbehave(&self, image: &str, how: Misbehaviour) {
        if let Ok(mut m) = self.misbehaviours.lock() {
            m.insert(image.to_owned(), how);
        }
    }

    fn misbehaviour(&self, attributes: &crate::Attributes) -> Option<Misbehaviour> {
        let image = attributes.get("image")?.as_str()?;
        self.misbehaviours.lock().ok()?.get(image).copied()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Objects>, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.objects
            .lock()
            .map_err(|_| ProviderError::api("fake", "poisoned"))
    }
}

#[async_trait]
impl Provider for FakeProvider {
    fn name(&self) -> &str {
        THING.provider
    }

    fn schema(&self, kind: &str) -> Result<&'static [AttributeSchema], ProviderError> {
        THING.schema(kind)
    }

    async fn read(
        &self,
        kind: &str,
        ids: &[String],
    ) -> Result<BTreeMap<String, Observed>, ProviderError> {
        THING.check(kind)?;
        let objects = self.lock()?;
        Ok(ids
            .iter()
            .filter_map(|id| objects.get(id).map(|(_, o)| (id.clone(), o.clone())))
            .collect())
    }

    async fn find_by_token(
        &self,
        kind: &str,
        tokens: &[String],
    ) -> Result<BTreeMap<String, Observed>, ProviderError> {
        THING.check(kind)?;
        let objects = self.lock()?;
        Ok(objects
            .values()
            .filter(|(token, _)| tokens.contains(token))
            .map(|(token, o)| (token.clone(), o.clone()))
            .collect())
    }

    async fn create(&self, request: CreateRequest<'_>) -> Result<Observed, ProviderError> {
        THING.check(request.kind)?;
        match self.misbehaviour(request.attributes) {
            None => {}
            Some(Misbehaviour::Fail) => {
                return Err(ProviderError::api("CreateThing", "injected failure"));
            }
            Some(Misbehaviour::Slow(delay)) => tokio::time::sleep(delay).await,
            Some(Misbehaviour::Panic) => panic!("injected panic in CreateThing"),
        }
        let mut objects = self.lock()?;
        if let Some((_, existing)) = objects.values().find(|(t, _)| t == request.token) {
            return Ok(existing.clone());
        }
        let n = self.next_id.fetch_add(1, Ordering::SeqCst);
        let id = format!("thing-{n:04}");
        let mut attributes = request.attributes.clone();
        attributes.insert("address".into(), Value::from(format!("10.0.0.{n}")));
        let observed = Observed {
            id: id.clone(),
            attributes,
        };
        objects.insert(id, (request.token.to_owned(), observed.clone()));
        Ok(observed)
    }

    async fn update(&self, request: UpdateRequest<'_>) -> Result<Observed, ProviderError> {
        THING.check(request.kind)?;
        let mut objects = self.lock()?;
        let (_, object) = objects
            .get_mut(request.id)
            .ok_or_else(|| THING.not_found(request.id))?;
        for change in request.changes {
            match &change.after {
                Some(v) => object.attributes.insert(change.name.clone(), v.clone()),
                None => object.attributes.remove(&change.name),
            };
        }
        Ok(object.clone())
    }

    async fn delete(&self, kind: &str, id: &str) -> Result<(), ProviderError> {
        THING.check(kind)?;
        self.lock()?.remove(id);
        Ok(())
    }
}
