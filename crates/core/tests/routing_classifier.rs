//! The `classifier` strategy with the real embedded MiniLM: a labelled set of 60 prompts (20
//! per tier, none of them among the configured examples) is sorted into tiers, and the
//! accuracy is reported and held to at least 85%. Needs the embedded model's files
//! (`modelgate models pull`; `.ci/run` installs them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use modelgate_core::models::LOCAL_EMBED_MODEL;
use modelgate_core::routing::{Routing, RoutingDoc, RoutingSettings};
use modelgate_core::usage::PriceCatalog;
use modelgate_core::{CallContext, Dialect, Gateway, ModelInfo, ModelPolicy, ServedModel};
use modelgate_providers::Provider;
use modelgate_testkit::scripted::ScriptedProvider;
use modelgate_types::{ChatRequest, Message, Role};

/// The router as an operator writes it: three tiers, a dozen examples each. (The same
/// examples are in `docs/routing.md`.)
const CONFIG: &str = r#"
[[routers]]
name = "auto"
strategy = "classifier"

[routers.classifier.tiers.simple]
model = "small"
examples = [
  "hi",
  "thanks!",
  "What is the capital of Italy?",
  "How many days are in a leap year?",
  "Translate 'good morning' into Spanish.",
  "What time zone is Tokyo in?",
  "Convert 5 kilometres to miles.",
  "Who wrote Romeo and Juliet?",
  "Spell 'necessary'.",
  "What is 12 times 8?",
  "Is a tomato a fruit?",
  "What's the boiling point of water in Fahrenheit?",
]

[routers.classifier.tiers.medium]
model = "medium"
examples = [
  "Explain how vaccines train the immune system.",
  "Summarize the causes of the French Revolution in a paragraph.",
  "Write a polite email asking my landlord to fix the heating.",
  "What are the pros and cons of remote work?",
  "Describe the difference between TCP and UDP.",
  "Write a short product description for a stainless steel water bottle.",
  "How does compound interest work? Give an example.",
  "Explain what a REST API is to a beginner.",
  "Give me five tips for improving my sleep.",
  "Rewrite this paragraph to sound more formal.",
  "Write a Python function that reverses a string.",
  "What is the difference between a virus and a bacterium?",
]

[routers.classifier.tiers.complex]
model = "large"
examples = [
  "Design a globally distributed payment system with exactly-once processing, and justify your consistency and failure-handling choices.",
  "Prove that there are infinitely many prime numbers and then generalise the argument to primes of the form 4k+3.",
  "Analyse the trade-offs between microservices and a modular monolith for a 200-engineer organisation, with a migration plan.",
  "Develop a five-year market entry strategy for an electric scooter company in Southeast Asia, including risks and financial assumptions.",
  "Write a detailed technical specification for a multi-tenant rate limiter that works across regions with bounded error.",
  "Compare three approaches to training large language models on limited GPU memory and recommend one for a given budget, with calculations.",
  "Critically evaluate the evidence for and against a universal basic income, weighing economic, social and political arguments.",
  "Derive the backpropagation equations for a two-layer neural network and explain the numerical stability issues.",
  "Plan the architecture, data model and rollout of a hospital scheduling system that must comply with privacy regulations.",
  "Refactor a legacy monolithic codebase into event-driven services: outline the steps, the risks, and how to keep data consistent during migration.",
  "Model the supply chain disruption of a semiconductor shortage and propose mitigation strategies with quantitative reasoning.",
  "Assess the security of an OAuth 2.0 deployment end to end and write a threat model with prioritised mitigations.",
]
"#;

/// The labelled test set: 20 prompts per tier, none of them an example above.
const SIMPLE: [&str; 20] = [
    "hello!",
    "What is the capital of Canada?",
    "How many legs does a spider have?",
    "Translate 'thank you' into French.",
    "What is 7 plus 15?",
    "Who painted the Mona Lisa?",
    "How many minutes are in an hour?",
    "What's the chemical symbol for gold?",
    "Convert 10 pounds to kilograms.",
    "What year did World War II end?",
    "Is the sun a star?",
    "What colour do you get by mixing blue and yellow?",
    "good night",
    "What is the largest ocean?",
    "How do you say 'cat' in German?",
    "What is the square root of 81?",
    "Who was the first person on the moon?",
    "Which planet is closest to the sun?",
    "What day comes after Thursday?",
    "ok thanks, bye",
];

const MEDIUM: [&str; 20] = [
    "Explain how photosynthesis works.",
    "Summarize the plot of Pride and Prejudice in a few sentences.",
    "Write a friendly email inviting my team to a Friday lunch.",
    "What are the advantages and disadvantages of electric cars?",
    "Describe how a hash table works.",
    "Write a short cover letter for a junior data analyst job.",
    "How does inflation affect savings? Give an example.",
    "Explain the difference between weather and climate.",
    "Give me some tips for a successful job interview.",
    "Write a JavaScript function that checks whether a number is prime.",
    "Explain what Git branches are and why they are useful.",
    "What is the difference between stocks and bonds?",
    "Describe the water cycle for a school project.",
    "Write a haiku-style product blurb for a coffee mug and explain the imagery.",
    "How do noise-cancelling headphones work?",
    "Summarize the main ideas of stoic philosophy.",
    "Explain how a bill becomes a law in the United States.",
    "Rewrite this sentence to be more concise: 'In my personal opinion I think that we should maybe go.'",
    "What are good habits for learning a new language?",
    "Explain the difference between SQL and NoSQL databases.",
];

const COMPLEX: [&str; 20] = [
    "Design a fault-tolerant distributed database that supports cross-region transactions, and justify every consistency trade-off you make.",
    "Prove that the square root of 2 is irrational, then extend the proof to the square root of any prime.",
    "Analyse the long-term economic effects of an ageing population on pension systems and propose policy reforms with quantitative estimates.",
    "Create a complete go-to-market strategy for a B2B cybersecurity startup, including pricing, channels, competitive analysis and a three-year forecast.",
    "Architect a real-time fraud detection platform processing a million events per second, covering data pipelines, models, latency budgets and failure recovery.",
    "Critically compare Kantian ethics and utilitarianism when applied to autonomous vehicle decision-making, and defend a position.",
    "Derive the Black-Scholes equation from first principles and discuss where its assumptions fail in real markets.",
    "Plan a migration of a banking core system from mainframe to cloud with zero downtime, covering data consistency, regulatory constraints and rollback.",
    "Evaluate the trade-offs of three consensus algorithms for a blockchain-based supply chain and recommend one with a detailed justification.",
    "Write a comprehensive threat model for a mobile banking app, listing attack vectors, their likelihood and impact, and prioritised mitigations.",
    "Design an experiment to measure the causal effect of a recommendation algorithm on user retention, addressing bias, confounders and statistical power.",
    "Develop a detailed curriculum for teaching machine learning to software engineers over six months, with milestones, projects and assessment criteria.",
    "Model the spread of an infectious disease with an SEIR model, estimate the parameters from early outbreak data, and evaluate intervention strategies.",
    "Propose an architecture for a multi-tenant SaaS analytics platform with strict data isolation, cost controls and per-tenant performance guarantees.",
    "Analyse how climate change will affect global food security by 2050, integrating agricultural, economic and geopolitical factors.",
    "Design a compiler optimisation pass for loop vectorisation, explain the dependency analysis and prove the transformation preserves semantics.",
    "Compare the scalability and operational costs of Kubernetes, serverless and VM-based deployments for a large e-commerce site, with a recommendation.",
    "Formulate and solve an optimisation problem for scheduling deliveries across a fleet of vehicles with time windows and capacity limits.",
    "Assess the geopolitical risks of relying on a single supplier for rare earth metals and design a diversification strategy for a manufacturer.",
    "Explain and critique the proof strategy of the four colour theorem, including the role of computer-assisted verification.",
];

#[tokio::test]
async fn minilm_nearest_centroid_sorts_the_labelled_set_into_tiers() {
    let embedder: Arc<dyn Provider> = common::minilm();
    let routing = Arc::new(Routing::new(
        RoutingSettings::default(),
        None,
        BTreeSet::new(),
        PriceCatalog::default(),
    ));
    let gateway = Gateway::builder()
        .cache(None)
        .routing(Arc::clone(&routing))
        .build();
    let info = |id: &str, kind: &'static str| ModelInfo {
        id: id.into(),
        owned_by: "test".into(),
        kind,
        aliases: vec![],
        format: None,
    };
    let mut served = vec![ServedModel::new(
        info(LOCAL_EMBED_MODEL, "embedding"),
        "local",
        embedder,
        ModelPolicy::default(),
    )];
    for id in ["small", "medium", "large"] {
        served.push(ServedModel::new(
            info(id, "chat"),
            "p",
            ScriptedProvider::new(id) as Arc<dyn Provider>,
            ModelPolicy::default(),
        ));
    }
    gateway.install(served);
    let doc: RoutingDoc = toml::from_str(CONFIG).unwrap();
    routing.change(doc, "test", "", None).await.unwrap();

    let mut confusion: BTreeMap<(&str, String), usize> = BTreeMap::new();
    let mut right = 0;
    let sets = [("simple", SIMPLE), ("medium", MEDIUM), ("complex", COMPLEX)];
    for (tier, prompts) in sets {
        for p in prompts {
            let ctx = CallContext::builder(Dialect::OpenAi).build();
            let request = ChatRequest {
                model: "auto".into(),
                messages: vec![Message::text(Role::User, p)],
                ..Default::default()
            };
            gateway.converse(&ctx, request).await.unwrap();
            let d = ctx.served().unwrap().routing.unwrap();
            let got = d.tier.clone().unwrap();
            assert!(d.score.is_some_and(|s| s > 0.0));
            assert_eq!(d.side_calls[0].purpose, "classifier");
            assert!(d.side_calls[0].usage.input_tokens > 0);
            if got == tier {
                right += 1;
            } else {
                eprintln!("{tier} prompt classified {got}: {p}");
            }
            *confusion.entry((tier, got)).or_default() += 1;
        }
    }
    let accuracy = f64::from(right) / 60.0;
    eprintln!("classifier accuracy {right}/60 = {accuracy:.3}; confusion {confusion:?}");
    assert!(accuracy >= 0.85, "accuracy {accuracy:.3} is under 0.85");
}
