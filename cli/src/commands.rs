//! The commands: each parses its inputs, asks a [`Source`] (a ledger file
//! or the ledger service) or the ledger library, and prints.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::{Context, Result, bail};
use openmodel_history::confirm::{self, Confirmations};
use openmodel_history::inventory::inventory as replay_inventory;
use openmodel_ledger::Ledger;
use openmodel_ledger::entry::{Entry, Timestamp};
use openmodel_ledger::export::{BundleWriter, to_csv};
use openmodel_ledger::note::{Signer, Verifier};
use openmodel_ledger::proof_file::TlogProof;
use openmodel_ledger::query::{MAX_LIMIT, Query, parse_object};
use openmodel_ledger::store::{OpenCheck, PendingAppend, StoredEntry};
use openmodel_ledger::verify::verify_bundle;

use crate::ExitCode;
use crate::cli::{AuditCommand, Cli, Command, Filters, Format, LedgerCommand};
use crate::output;
use crate::source::{Choice, Source, choose, parse_verifier};
use crate::walk::walk;

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let key = cli.key.as_deref().map(parse_verifier).transpose()?;
    // Commands that write go to a file: the service lets only the operator append.
    let file = || match choose(cli.ledger.as_ref(), &cli.server)? {
        Choice::File(path) => Ok(path.to_owned()),
        Choice::Server(_) => bail!(
            "this command works on a ledger file (--ledger); through the ledger service only the \
             operator appends"
        ),
    };
    let source = || Source::open(cli.ledger.as_ref(), &cli.server, key.clone());
    let needs_key = || {
        key.clone().context(
            "verify needs the log's verifier key: pass --key VKEY (or set OPENMODEL_LEDGER_KEY)",
        )
    };
    match &cli.command {
        Command::Ledger(LedgerCommand::Init {
            origin,
            key_file,
            cluster,
        }) => init(&file()?, origin, key_file, cluster),
        Command::Audit(cmd) => match cmd {
            AuditCommand::Record {
                key_file,
                file: input,
                jsonl,
            } => record(&file()?, key_file, input.as_deref(), *jsonl),
            AuditCommand::Log {
                filters,
                output,
                limit,
                start,
                all,
            } => log(&mut source()?, filters, *output, *limit, *start, *all),
            AuditCommand::Show { index, output } => show(&mut source()?, *index, *output),
            AuditCommand::Proof { index, out } => proof(&mut source()?, *index, out.as_deref()),
            AuditCommand::Export { dir } => export(&mut source()?, dir),
            AuditCommand::Inventory { at, model, output } => {
                inventory(&mut source()?, at.as_deref(), model.as_deref(), *output)
            }
            AuditCommand::Verify {
                bundle,
                proof,
                since_checkpoint,
                save_checkpoint,
            } => match (bundle, proof) {
                (Some(dir), _) => verify_export(
                    dir,
                    &needs_key()?,
                    since_checkpoint.as_deref(),
                    save_checkpoint.as_deref(),
                ),
                (None, Some(file)) => verify_proof(file, &needs_key()?),
                (None, None) => match choose(cli.ledger.as_ref(), &cli.server)? {
                    Choice::File(path) => verify_ledger(path, &needs_key()?),
                    Choice::Server(_) => verify_log(&mut source()?),
                },
            },
        },
    }
}

fn read_text(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn load_signer(path: &Path) -> Result<Signer> {
    Ok(read_text(path)?.trim().parse::<Signer>()?)
}

fn write_new(path: &Path, contents: &str, private: bool) -> Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

fn init(ledger: &Path, origin: &str, key_file: &Path, cluster: &str) -> Result<ExitCode> {
    if ledger.exists() {
        bail!(
            "{} already exists; choose a new file for a new ledger",
            ledger.display()
        );
    }
    let signer = Signer::generate(origin)?;
    let verifier = signer.verifier().to_string();
    let pub_file = PathBuf::from(format!("{}.pub", key_file.display()));
    write_new(key_file, &format!("{signer}\n"), true)?;
    write_new(&pub_file, &format!("{verifier}\n"), false)?;
    let l = Ledger::create(ledger, signer, cluster)?;
    println!("created ledger {} (origin {origin})", ledger.display());
    println!("private key: {} (keep it secret)", key_file.display());
    println!("verifier key: {verifier}");
    println!(
        "              (also in {}; give it to auditors)",
        pub_file.display()
    );
    println!("first checkpoint: size {}", l.checkpoint()?.checkpoint.size);
    Ok(ExitCode::Ok)
}

fn record(ledger: &Path, key_file: &Path, file: Option<&Path>, jsonl: bool) -> Result<ExitCode> {
    let ledger = Ledger::open(ledger, load_signer(key_file)?, OpenCheck::Quick)?;
    let input: Box<dyn Read + Send> = match file {
        Some(f) => {
            Box::new(fs::File::open(f).with_context(|| format!("cannot open {}", f.display()))?)
        }
        None => Box::new(std::io::stdin()),
    };
    if !jsonl {
        let mut text = Vec::new();
        BufReader::new(input).read_to_end(&mut text)?;
        if text.iter().all(u8::is_ascii_whitespace) {
            bail!("no entry given: pass --file FILE or pipe one JSON entry on standard input");
        }
        let r = ledger.append(Entry::parse_draft(&text)?)?;
        let what = if r.existing {
            "already recorded (same dedupe key)"
        } else {
            "recorded"
        };
        println!(
            "{what}: entry {} at {} (tree size {})",
            r.index, r.time, r.tree_size
        );
        return Ok(ExitCode::Ok);
    }
    // Pipelined: submissions run ahead of acknowledgements, so group commit
    // batches them; each index is printed once durable, in input order.
    let (tx, rx) = mpsc::sync_channel::<Result<(usize, PendingAppend)>>(1024);
    std::thread::scope(|s| -> Result<ExitCode> {
        let ledger = &ledger;
        s.spawn(move || {
            for (n, line) in BufReader::new(input).lines().enumerate() {
                let item = line
                    .context("reading standard input")
                    .and_then(|l| Ok(Entry::parse_draft(l.as_bytes())?))
                    .and_then(|e| Ok(ledger.submit(e)?))
                    .map(|p| (n + 1, p))
                    .with_context(|| format!("line {}", n + 1));
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    break;
                }
            }
        });
        let mut out = std::io::stdout().lock();
        for item in rx {
            let (line, pending) = item?;
            let r = pending.wait().with_context(|| format!("line {line}"))?;
            writeln!(out, "{}", r.index)?;
            out.flush()?;
        }
        Ok(ExitCode::Ok)
    })
}

fn to_query(f: &Filters, limit: usize, start: u64) -> Result<Query> {
    Ok(Query {
        object: f.model.as_deref().map(parse_object).transpose()?,
        kind: f.kind.clone(),
        since: f.since.as_deref().map(Timestamp::parse).transpose()?,
        until: f.until.as_deref().map(Timestamp::parse).transpose()?,
        digest: f.digest.clone(),
        dataset: f.dataset.clone(),
        actor: f.actor.clone(),
        start,
        limit,
    })
}

fn log(
    source: &mut Source,
    filters: &Filters,
    format: Format,
    limit: usize,
    start: u64,
    all: bool,
) -> Result<ExitCode> {
    let mut query = to_query(filters, limit, start)?;
    let mut pages = Vec::new();
    loop {
        let page = source.query(&query, true)?;
        let next = page.next;
        pages.push(page);
        match next {
            Some(n) if all => query.start = n,
            _ => break,
        }
    }
    let first = &pages[0];
    let last = pages.last().expect("at least one page");
    let mut merged = last.clone();
    merged.entries = pages.iter().flat_map(|p| p.entries.clone()).collect();
    merged.scanned = first.scanned.start..last.scanned.end;
    match format {
        Format::Table => {
            let unconfirmed = unconfirmed_admissions(source, &merged.entries)?;
            print!("{}", output::table(&merged.entries, &unconfirmed));
            eprintln!("{}", output::coverage(&merged, source.proves_entries()));
        }
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&output::page_json(
                &merged,
                &unconfirmed_admissions(source, &merged.entries)?
            ))?
        ),
        Format::Csv => print!("{}", to_csv(&merged.entries, true)),
    }
    Ok(ExitCode::Ok)
}

/// The admission entries among `entries` that no controller entry logged
/// so far confirms: each of their objects' `spec.changed` entries from its
/// first admission on the page are read.
fn unconfirmed_admissions(source: &mut Source, entries: &[StoredEntry]) -> Result<BTreeSet<u64>> {
    let mut first_by_object: BTreeMap<(String, String), u64> = BTreeMap::new();
    for e in entries {
        if let (Some(_), Some(o)) = (confirm::admission(e.index, &e.entry), &e.entry.object) {
            first_by_object
                .entry((o.namespace.clone(), o.name.clone()))
                .or_insert(e.index);
        }
    }
    let mut confirmations = Confirmations::default();
    for ((namespace, name), start) in first_by_object {
        let mut query = Query {
            object: Some((namespace, Some(name))),
            kind: Some("spec.changed".into()),
            start,
            limit: MAX_LIMIT,
            ..Query::default()
        };
        loop {
            let page = source.query(&query, false)?;
            page.entries.iter().for_each(|e| confirmations.read(e));
            match page.next {
                Some(next) => query.start = next,
                None => break,
            }
        }
    }
    Ok(confirmations.unconfirmed().collect())
}

fn show(source: &mut Source, index: u64, format: Format) -> Result<ExitCode> {
    let (proof, checkpoint) = source.prove(index)?;
    let leaf = proof.extra.context("the proof carries no entry")?;
    let e = StoredEntry::from_leaf(index, leaf)?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&e.to_json())?),
        Format::Csv => print!("{}", to_csv(std::slice::from_ref(&e), true)),
        Format::Table => {
            println!("index:     {}", e.index);
            println!("leaf hash: {}", e.leaf_hash().to_base64());
            println!("kind:      {}", e.entry.kind());
            println!("summary:   {}", output::detail(&e.entry));
            let json: serde_json::Value = serde_json::from_slice(&e.leaf)?;
            println!("{}", serde_json::to_string_pretty(&json)?);
            if source.proves_entries() {
                eprintln!(
                    "inclusion proof checked: entry {index} is in the signed tree of size {}",
                    checkpoint.checkpoint.size
                );
            }
        }
    }
    Ok(ExitCode::Ok)
}

fn proof(source: &mut Source, index: u64, out: Option<&Path>) -> Result<ExitCode> {
    let text = source.prove(index)?.0.encode();
    match out {
        Some(path) => {
            write_new(path, &text, false)?;
            eprintln!("wrote the proof of entry {index} to {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::Ok)
}

fn export(source: &mut Source, dir: &Path) -> Result<ExitCode> {
    let checkpoint = source.checkpoint()?;
    let mut writer = BundleWriter::create(dir, checkpoint.clone())?;
    walk(source, &checkpoint, None, |entry, nodes| {
        writer.entry(entry)?;
        nodes
            .iter()
            .try_for_each(|(node, hash)| writer.hash(*node, hash))?;
        Ok(())
    })
    .with_context(|| format!("the export in {} is incomplete; delete it", dir.display()))?;
    let report = writer.finish()?;
    let cp = &report.checkpoint.checkpoint;
    println!(
        "exported {} entries ({} hash tiles) at checkpoint size {} root {} to {}",
        cp.size,
        report.tiles,
        cp.size,
        cp.root.to_base64(),
        dir.display()
    );
    if let Some(key) = source.verifier() {
        println!(
            "verify with: openmodel audit verify --bundle {} --key '{key}'",
            dir.display()
        );
    }
    Ok(ExitCode::Ok)
}

fn inventory(
    source: &mut Source,
    at: Option<&str>,
    model: Option<&str>,
    format: Format,
) -> Result<ExitCode> {
    let at = at
        .map(Timestamp::parse)
        .transpose()?
        .unwrap_or_else(Timestamp::now);
    let only = model.map(parse_object).transpose()?;
    let checkpoint = source.checkpoint()?;
    let mut entries = Vec::new();
    walk(source, &checkpoint, Some(at), |entry, _| {
        entries.push(entry.clone());
        Ok(())
    })?;
    let mut inventory = replay_inventory(&entries, at);
    if let Some((namespace, name)) = &only {
        inventory
            .models
            .retain(|m| &m.namespace == namespace && name.as_ref().is_none_or(|n| n == &m.name));
    }
    for m in &inventory.models {
        for warning in &m.warnings {
            eprintln!("warning: {}/{}: {warning}", m.namespace, m.name);
        }
        if let Some(note) = output::unconfirmed_note(&m.unconfirmed_admissions) {
            eprintln!("note: {}/{}: {note}", m.namespace, m.name);
        }
    }
    match format {
        Format::Table => {
            print!("{}", output::inventory_table(&inventory));
            eprintln!("{}", output::inventory_coverage(&inventory, &checkpoint));
        }
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&output::inventory_json(&inventory, &checkpoint))?
        ),
        Format::Csv => print!("{}", output::inventory_csv(&inventory)),
    }
    Ok(ExitCode::Ok)
}

/// Verifies a server's whole log against its signed checkpoint.
fn verify_log(source: &mut Source) -> Result<ExitCode> {
    let checkpoint = source.checkpoint()?;
    let mut confirmations = Confirmations::default();
    let walked = walk(source, &checkpoint, None, |entry, _| {
        confirmations.read(entry);
        Ok(())
    })?;
    let cp = &checkpoint.checkpoint;
    let key = source.verifier().map_or_else(
        || "nobody (--no-verify)".to_owned(),
        |k| k.name().to_owned(),
    );
    println!(
        "VERIFIED: all {walked} entries served by {} recomputed to root {}, signed by {key}",
        source.describe(),
        cp.root.to_base64()
    );
    if let Some(seen) = source.seen() {
        println!("CONSISTENT with every checkpoint seen before; {seen}");
    }
    let unconfirmed: Vec<u64> = confirmations.unconfirmed().collect();
    if let Some(note) = output::unconfirmed_note(&unconfirmed) {
        println!("NOTE: {note}");
    }
    Ok(ExitCode::Ok)
}

fn verify_export(
    dir: &Path,
    verifier: &Verifier,
    since: Option<&Path>,
    save: Option<&Path>,
) -> Result<ExitCode> {
    let since = since.map(read_text).transpose()?;
    let report = verify_bundle(dir, verifier, since.as_deref())?;
    let cp = &report.checkpoint.checkpoint;
    println!(
        "VERIFIED: {} entries, root {} signed by {}",
        cp.size,
        cp.root.to_base64(),
        verifier.name()
    );
    if let Some(old) = &report.consistent_with {
        println!(
            "CONSISTENT: the log only grew since your checkpoint of size {} (root {})",
            old.checkpoint.size,
            old.checkpoint.root.to_base64()
        );
    }
    if let Some(path) = save {
        fs::write(path, &report.checkpoint.note)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!(
            "saved this checkpoint to {}; pass it as --since-checkpoint next time",
            path.display()
        );
    }
    Ok(ExitCode::Ok)
}

fn verify_proof(file: &Path, verifier: &Verifier) -> Result<ExitCode> {
    let proof = TlogProof::parse(&read_text(file)?)?;
    let signed = proof.verify(verifier, None)?;
    let entry = proof
        .extra
        .as_deref()
        .map(Entry::parse_logged)
        .transpose()?;
    println!(
        "VERIFIED: entry {} ({}) is in the log of size {} signed by {}",
        proof.index,
        entry.as_ref().map_or("entry bytes checked", |e| e.kind()),
        signed.checkpoint.size,
        verifier.name()
    );
    Ok(ExitCode::Ok)
}

fn verify_ledger(path: &Path, verifier: &Verifier) -> Result<ExitCode> {
    let ledger = Ledger::open_read_only(path, OpenCheck::Quick)?;
    if ledger.verifier() != verifier {
        bail!(openmodel_ledger::Error::BadSignature(format!(
            "the ledger's stored key ({}) is not the key you trust ({verifier}): the file was re-keyed",
            ledger.verifier()
        )));
    }
    let report = ledger.verify_stored_with(verifier)?;
    let size = report.checkpoint.as_ref().map_or(0, |c| c.checkpoint.size);
    println!(
        "VERIFIED: {size} entries and every stored hash recomputed; {} signed checkpoints match",
        report.checkpoints
    );
    let mut confirmations = Confirmations::default();
    let mut query = Query {
        kind: Some("spec.changed".into()),
        limit: MAX_LIMIT,
        ..Query::default()
    };
    loop {
        let page = ledger.query(&query)?;
        page.entries.iter().for_each(|e| confirmations.read(e));
        match page.next {
            Some(next) => query.start = next,
            None => break,
        }
    }
    let unconfirmed: Vec<u64> = confirmations.unconfirmed().collect();
    if let Some(note) = output::unconfirmed_note(&unconfirmed) {
        println!("NOTE: {note}");
    }
    Ok(ExitCode::Ok)
}
