//! The commands: each parses its inputs, calls the ledger library and prints.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::{Context, Result, bail};
use openmodel_ledger::Ledger;
use openmodel_ledger::entry::{Entry, Timestamp};
use openmodel_ledger::export::to_csv;
use openmodel_ledger::note::{Signer, Verifier};
use openmodel_ledger::proof_file::TlogProof;
use openmodel_ledger::query::{Query, parse_object};
use openmodel_ledger::store::{OpenCheck, PendingAppend};
use openmodel_ledger::verify::verify_bundle;

use crate::ExitCode;
use crate::cli::{AuditCommand, Cli, Command, Filters, Format, LedgerCommand};
use crate::output;

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let ledger_path = || {
        cli.ledger
            .clone()
            .context("no ledger file: pass --ledger FILE or set OPENMODEL_LEDGER")
    };
    match cli.command {
        Command::Ledger(LedgerCommand::Init {
            origin,
            key_file,
            cluster,
        }) => init(&ledger_path()?, &origin, &key_file, &cluster),
        Command::Audit(cmd) => match cmd {
            AuditCommand::Record {
                key_file,
                file,
                jsonl,
            } => record(&ledger_path()?, &key_file, file.as_deref(), jsonl),
            AuditCommand::Log {
                filters,
                output,
                limit,
                start,
                all,
            } => log(
                &read_only(&ledger_path()?)?,
                &filters,
                output,
                limit,
                start,
                all,
            ),
            AuditCommand::Show { index, output } => {
                show(&read_only(&ledger_path()?)?, index, output)
            }
            AuditCommand::Proof { index, out } => {
                proof(&read_only(&ledger_path()?)?, index, out.as_deref())
            }
            AuditCommand::Export { dir } => export(&read_only(&ledger_path()?)?, &dir),
            AuditCommand::Verify {
                bundle,
                proof,
                key,
                since_checkpoint,
                save_checkpoint,
            } => {
                let verifier = parse_verifier(&key)?;
                match (bundle, proof) {
                    (Some(dir), _) => verify_export(
                        &dir,
                        &verifier,
                        since_checkpoint.as_deref(),
                        save_checkpoint.as_deref(),
                    ),
                    (None, Some(file)) => verify_proof(&file, &verifier),
                    (None, None) => verify_ledger(&ledger_path()?, &verifier),
                }
            }
        },
    }
}

fn read_only(path: &Path) -> Result<Ledger> {
    Ok(Ledger::open_read_only(path, OpenCheck::Quick)?)
}

fn read_text(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// A verifier key given inline or as a file holding it.
fn parse_verifier(key: &str) -> Result<Verifier> {
    let text = if Path::new(key).is_file() {
        read_text(Path::new(key))?
    } else {
        key.to_owned()
    };
    Ok(text.trim().parse::<Verifier>()?)
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
    ledger: &Ledger,
    filters: &Filters,
    format: Format,
    limit: usize,
    start: u64,
    all: bool,
) -> Result<ExitCode> {
    let mut query = to_query(filters, limit, start)?;
    let mut pages = Vec::new();
    loop {
        let page = ledger.query(&query)?;
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
            print!("{}", output::table(&merged.entries));
            eprintln!("{}", output::coverage(&merged));
        }
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&output::page_json(&merged))?
        ),
        Format::Csv => print!("{}", to_csv(&merged.entries, true)),
    }
    Ok(ExitCode::Ok)
}

fn show(ledger: &Ledger, index: u64, format: Format) -> Result<ExitCode> {
    let e = ledger.entry(index)?;
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
        }
    }
    Ok(ExitCode::Ok)
}

fn proof(ledger: &Ledger, index: u64, out: Option<&Path>) -> Result<ExitCode> {
    let text = ledger.prove(index)?.encode();
    match out {
        Some(path) => {
            write_new(path, &text, false)?;
            eprintln!("wrote the proof of entry {index} to {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::Ok)
}

fn export(ledger: &Ledger, dir: &Path) -> Result<ExitCode> {
    let report = ledger.export(dir)?;
    let cp = &report.checkpoint.checkpoint;
    println!(
        "exported {} entries ({} hash tiles) at checkpoint size {} root {} to {}",
        cp.size,
        report.tiles,
        cp.size,
        cp.root.to_base64(),
        dir.display()
    );
    println!(
        "verify with: openmodel audit verify --bundle {} --key '{}'",
        dir.display(),
        ledger.verifier()
    );
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
    Ok(ExitCode::Ok)
}
