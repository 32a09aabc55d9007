//! `reservoir`: parse the command line, start telemetry, call the library.

use anyhow::Context as _;

// The worker allocates many small short-lived buffers per event; glibc's
// malloc was a quarter of its CPU in a profile (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "reservoir", version, about = "Inventory reservation worker: Kafka events in, atomic Redis Lua scripts, availability out")]
struct Cli {
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text", env = "RESERVOIR_LOG_FORMAT")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the input topics, apply them to stock, publish availability and results.
    ///
    /// Example: RESERVOIR_KAFKA_BOOTSTRAP=127.0.0.1:9092 RESERVOIR_REDIS_URL=redis://127.0.0.1:6379 reservoir run
    Run {
        #[command(flatten)]
        settings: reservoir::config::Settings,
    },
    /// Produce example events (`{"key", "value"}` files under DIR/<topic>/) to the input topics, in file-name order.
    ///
    /// Example: reservoir play topics/examples --kafka-bootstrap 127.0.0.1:9092
    Play {
        /// Folder with one sub-folder per input topic.
        #[arg(default_value = "topics/examples")]
        dir: std::path::PathBuf,
        /// Milliseconds to wait after each event, so a story spanning topics plays in order.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        #[command(flatten)]
        settings: reservoir::config::Settings,
    },
    /// Print the messages of output topics (default: availability) as JSON lines, from the beginning, until ctrl-c.
    ///
    /// Example: reservoir tail --kafka-bootstrap 127.0.0.1:9092 --topic inventory.reservations
    Tail {
        /// Topic to read (repeatable); default: the availability topic.
        #[arg(long = "topic")]
        topics: Vec<String>,
        #[command(flatten)]
        settings: reservoir::config::Settings,
    },
    /// Measure the whole path (Kafka → worker → Redis → Kafka, offsets committed) beside the Redis ceiling.
    ///
    /// With no --kafka/--redis it starts its own Redis and Apache Kafka. Prints a table; the last line is one JSON object.
    ///
    /// Examples: reservoir bench --quick;  reservoir bench --hot 0.5;  reservoir bench --kafka 10.0.0.5:9092 --redis redis://10.0.0.6:6379 --memory
    Bench {
        #[command(flatten)]
        args: reservoir::bench::BenchArgs,
    },
    /// Show one sku as stored: levels, holds, open reservations by order, availability per channel, version
    ///
    /// Reads only. Examples:
    ///   reservoir inspect SKU-1 --redis-url redis://127.0.0.1:6379
    ///   reservoir inspect SKU-1 --channel eu-web --json | jq .channels
    #[command(verbatim_doc_comment)]
    Inspect {
        /// The sku id, as in the events.
        sku: String,
        /// Only this channel's availability.
        #[arg(long)]
        channel: Option<String>,
        /// Print JSON (for scripts) instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: reservoir::config::Settings,
    },
    /// Check that every sku's reserved and beyond-stock counters equal the holds and open reservations they count
    ///
    /// Reads only; safe while workers run (a sku that looks wrong is read again
    /// in one atomic step before it is reported). Exit code 1 on a violation.
    /// Reserved above on hand without backorders/preorder is a warning (a count
    /// lowered after the reservations, or an oversell).
    /// Examples:
    ///   reservoir audit --redis-url redis://127.0.0.1:6379
    ///   reservoir audit --sku-prefix SHOE- --json
    #[command(verbatim_doc_comment)]
    Audit {
        /// Only skus whose id starts with this text.
        #[arg(long)]
        sku_prefix: Option<String>,
        /// Print JSON (for scripts) instead of lines.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: reservoir::config::Settings,
    },
    /// Publish a CSV of stock levels (sku,location,on_hand[,in_stock]) as inventory.level.set events
    ///
    /// Rows the workers would refuse are not sent; the summary lists them with
    /// their line numbers and reasons, and the exit code is 1 if there were any.
    /// Examples:
    ///   reservoir import levels.csv --kafka-bootstrap 127.0.0.1:9092
    ///   reservoir import levels.csv --dry-run          (check the file only)
    ///   reservoir import levels.csv --start-line 500001 (continue an interrupted import)
    #[command(verbatim_doc_comment)]
    Import {
        #[command(flatten)]
        args: reservoir::ops::import::ImportArgs,
        #[command(flatten)]
        settings: reservoir::config::Settings,
    },
    /// Publish the stored availability of every sku again, with the versions it has, to rebuild a downstream cache
    ///
    /// Walks Redis with SCAN (every master of a cluster) a page at a time and
    /// saves its place after each page; run the same command again to continue
    /// after an interruption. Stock is not touched.
    /// Examples:
    ///   reservoir republish --redis-url redis://127.0.0.1:6379 --kafka-bootstrap 127.0.0.1:9092
    ///   reservoir republish --channel eu-web --sku-prefix SHOE-
    ///   reservoir republish --redis-url redis://10.0.0.1:7000,redis://10.0.0.2:7000 --restart
    #[command(verbatim_doc_comment)]
    Republish {
        #[command(flatten)]
        args: reservoir::ops::republish::RepublishArgs,
        #[command(flatten)]
        settings: reservoir::config::Settings,
    },
    /// Move the worker group's offsets on an input topic back (workers stopped), so they re-read its events.
    ///
    /// Refuses while the group has members, and (unless --force) when it would re-read events older than the
    /// idempotency retention. Prints per partition: the committed offset, the new one, the messages to re-read.
    Replay {
        #[command(flatten)]
        args: reservoir::ops::replay::ReplayArgs,
        #[command(flatten)]
        settings: reservoir::config::Settings,
    },
    /// Run workers under load while faults are injected, then check the guarantees
    ///
    /// Starts Redis (AOF, fsync always), a 3-node Apache Kafka cluster and 3 workers,
    /// sends the benchmark's mix with repeats, cancels before placements and poison,
    /// and kills or freezes workers, Redis and partition leaders one fault at a time. Prints
    /// faults per kind, recovery times and violations; the last line is JSON.
    /// Exit code 1 on any violation.
    /// Examples:
    ///   reservoir soak --duration 3m
    ///   reservoir soak --duration 30m --seed 7 --dir /tmp/soak
    #[command(verbatim_doc_comment)]
    Soak {
        #[command(flatten)]
        args: reservoir::soak::SoakArgs,
    },
    /// Start Redis and Apache Kafka (one KRaft node) on loopback for development and the demo; ctrl-c stops them
    ///
    /// A port something already listens on is left to it. Kafka's jars come from scripts/deps.sh.
    /// Data stays in --dir, so a second start finds it. Prints the settings to use once both answer.
    /// Example: reservoir local --dir target/demo
    #[command(verbatim_doc_comment)]
    Local {
        #[command(flatten)]
        args: reservoir::local::LocalArgs,
    },
    /// Manage the contract's topics.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create every topic of the contract (availability compacted); existing ones are kept.
    ///
    /// Example: reservoir topics create --partitions 6 --kafka-bootstrap 127.0.0.1:9092 --redis-url redis://unused
    Create {
        /// Partitions per topic.
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// Replication factor.
        #[arg(long, default_value_t = 1)]
        replication: i32,
        #[command(flatten)]
        settings: reservoir::config::Settings,
    },
}

fn init_logs(format: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        "json" => builder.json().init(),
        "text" => builder.init(),
        other => anyhow::bail!("--log-format must be text or json, got {other:?}"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
}

/// `--help` names each setting's environment variable but never shows its
/// value: the variables hold passwords, and URLs and librdkafka options
/// with passwords in them.
fn without_env_values(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| a.hide_env_values(true)).mut_subcommands(without_env_values)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let cli = Cli::from_arg_matches(&without_env_values(Cli::command()).get_matches()).unwrap_or_else(|e| e.exit());
    init_logs(&cli.log_format)?;
    match cli.command {
        Command::Run { settings } => {
            let cfg = settings.resolve()?;
            reservoir::worker::run(cfg, shutdown_signal()).await.context("the worker stopped with an error")?;
        }
        Command::Play { dir, delay_ms, mut settings } => {
            settings.redis_url.get_or_insert_with(|| "redis://unused".into());
            let cfg = settings.resolve()?;
            let n = reservoir::tools::play(&cfg, &dir, std::time::Duration::from_millis(delay_ms)).await?;
            eprintln!("played {n} event(s) from {}", dir.display());
        }
        Command::Tail { topics, mut settings } => {
            settings.redis_url.get_or_insert_with(|| "redis://unused".into());
            let cfg = settings.resolve()?;
            let topics = if topics.is_empty() { vec![cfg.topics.availability.clone()] } else { topics };
            let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
            reservoir::tools::tail(&cfg, &refs, shutdown_signal()).await?;
        }
        Command::Bench { args } => {
            let report = reservoir::bench::run(args).await.context("the benchmark failed")?;
            print!("{}", report.table());
            println!("{}", report.json());
        }
        Command::Inspect { sku, channel, json, mut settings } => {
            // Inspecting needs no Kafka.
            settings.kafka_bootstrap.get_or_insert_with(|| "unused:9092".into());
            let cfg = settings.resolve()?;
            let mut conn = reservoir::store::Conn::connect(&cfg.redis).await.context("cannot connect to Redis")?;
            let now = reservoir::store::Clock::System.now_ms();
            let i = reservoir::ops::inspect::inspect(&mut conn, &sku, channel.as_deref(), now).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&i)?);
            } else {
                print!("{}", i.table());
            }
        }
        Command::Audit { sku_prefix, json, mut settings } => {
            // Auditing needs no Kafka.
            settings.kafka_bootstrap.get_or_insert_with(|| "unused:9092".into());
            let cfg = settings.resolve()?;
            let mut conn = reservoir::store::Conn::connect(&cfg.redis).await.context("cannot connect to Redis")?;
            let report = reservoir::ops::audit::audit(&mut conn, sku_prefix.as_deref(), 1000).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            if report.violations() > 0 {
                std::process::exit(1);
            }
        }
        Command::Import { args, mut settings } => {
            settings.redis_url.get_or_insert_with(|| "redis://unused".into());
            let cfg = settings.resolve()?;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = stop.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            let topic = cfg.topics.stock.clone();
            let summary = tokio::task::spawn_blocking(move || reservoir::ops::import::import(&cfg, &args, &stop)).await??;
            print!("{}", summary.report(&topic));
            if !summary.ok() {
                std::process::exit(1);
            }
        }
        Command::Republish { args, settings } => {
            let cfg = settings.resolve()?;
            let s = reservoir::ops::republish::republish(&cfg, &args, shutdown_signal()).await?;
            let how = if s.resumed { " (continued from the checkpoint)" } else { "" };
            println!("republished {} availability message(s) for {} sku(s) to {}{how}", s.messages, s.skus, cfg.topics.availability);
        }
        Command::Soak { args } => {
            let report = reservoir::soak::run(args).await.context("the soak could not run")?;
            print!("{}", report.table());
            println!("{}", report.json());
            if !report.violations.is_empty() {
                std::process::exit(1);
            }
        }
        Command::Replay { args, mut settings } => {
            // Replaying moves Kafka offsets only.
            settings.redis_url.get_or_insert_with(|| "redis://unused".into());
            let cfg = settings.resolve()?;
            let plan = reservoir::ops::replay::replay(&cfg, &args).await?;
            print!("{}", plan.table());
        }
        Command::Local { args } => {
            let stack = tokio::task::block_in_place(|| reservoir::local::LocalStack::start(&args)).context("the local stack did not start")?;
            println!("ready: RESERVOIR_KAFKA_BOOTSTRAP={} RESERVOIR_REDIS_URL={}", stack.bootstrap, stack.redis_url);
            shutdown_signal().await;
            tokio::task::block_in_place(move || drop(stack));
        }
        Command::Topics { command: TopicsCommand::Create { partitions, replication, mut settings } } => {
            // Creating topics needs no Redis.
            settings.redis_url.get_or_insert_with(|| "redis://unused".into());
            let cfg = settings.resolve()?;
            let created = reservoir::kafka::create_topics(&cfg, partitions, replication).await?;
            for t in cfg.topics.all() {
                let state = if created.iter().any(|c| c == t) { "created" } else { "exists" };
                println!("{t}\t{state}");
            }
        }
    }
    Ok(())
}
