// The shipped documentation, served read-only at /docs/<name>. The alert rules' default
// runbook_url points here (http://<instance>/docs/runbook#<alert>), so the link in an alert opens
// the runbook of the trainwatch that the alert is about, in the version that trainwatch runs.
//
// Only the docs/*.md files present when trainwatch starts are served. Their names form a fixed
// allow-list and their text is read once, at start. A request names a document, never a path:
// `..`, encoded slashes and unknown names all miss the list and get the ordinary 404, so nothing
// outside docs/ can be reached. Symbolic links in docs/ are not followed.
import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The docs/ directory beside dist/: in a clone, in the npm package, and at /app/docs in the image. */
export const DOCS_DIR = fileURLToPath(new URL('../../../docs/', import.meta.url));

/** The URL path the documents are served under. */
export const DOCS_PATH = '/docs';

/** The shipped documents, name (`runbook` for docs/runbook.md) → markdown. */
export type DocSet = ReadonlyMap<string, string>;

const NAME = /^[a-z0-9][a-z0-9-]*$/;

/** Reads the allow-list: every regular `<name>.md` file directly in `dir`. A missing `dir` gives none. */
export function loadDocs(dir = DOCS_DIR): DocSet {
  const docs = new Map<string, string>();
  let files: string[];
  try {
    files = readdirSync(dir);
  } catch {
    return docs;
  }
  for (const f of files.sort()) {
    const name = f.replace(/\.md$/, '');
    if (name === f || !NAME.test(name)) continue;
    const path = join(dir, f);
    if (lstatSync(path).isFile()) docs.set(name, readFileSync(path, 'utf8'));
  }
  return docs;
}

/** GitHub's anchor for a markdown heading: lower case, formatting and punctuation dropped, spaces to dashes. */
export function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[`*_]/g, '')
    .replace(/[^\p{L}\p{N} -]/gu, '')
    .replace(/ /g, '-');
}

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** One line's text with its markdown links made links: to other served documents, anchors, and http(s) URLs. */
function inline(text: string, docs: DocSet): string {
  let out = '';
  let at = 0;
  for (const m of text.matchAll(/\[([^\]]*)\]\(([^)\s]+)\)/g)) {
    const [whole, label, target] = m;
    const [file, anchor] = target.split('#', 2) as [string, string | undefined];
    const local = file.endsWith('.md') && !file.includes('/') ? file.slice(0, -3) : undefined;
    let href: string | undefined;
    if (/^https?:\/\//.test(target)) href = target;
    else if (file === '' && anchor) href = `#${anchor}`;
    else if (local !== undefined && docs.has(local)) href = anchor ? `${local}#${anchor}` : local;
    out += esc(text.slice(at, m.index)) + (href ? `<a href="${esc(href)}">${esc(label)}</a>` : esc(whole));
    at = m.index + whole.length;
  }
  return out + esc(text.slice(at));
}

/**
 * A document as a plain HTML page: every heading an element with its GitHub anchor as id (so
 * `#trainingheartbeatstalled` lands on it), the text between headings preformatted as written.
 * No script and no style, so the default Content-Security-Policy (default-src 'none') holds.
 */
export function docHtml(name: string, docs: DocSet): string {
  const md = docs.get(name) ?? '';
  const parts: string[] = [];
  const seen = new Map<string, number>();
  let block: string[] = [];
  let fence = false;
  let title = name;
  const flush = () => {
    while (block.length > 0 && block[0].trim() === '') block.shift();
    while (block.length > 0 && block[block.length - 1].trim() === '') block.pop();
    if (block.length > 0) parts.push(`<pre>${block.join('\n')}</pre>`);
    block = [];
  };
  for (const line of md.split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) fence = !fence;
    const h = fence ? null : /^(#{1,6}) +(.+?)\s*$/.exec(line);
    if (!h) {
      block.push(inline(line, docs));
      continue;
    }
    flush();
    const base = slug(h[2]);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    const id = n === 0 ? base : `${base}-${n}`;
    if (h[1].length === 1 && title === name) title = h[2];
    parts.push(`<h${h[1].length} id="${esc(id)}">${inline(h[2], docs)}</h${h[1].length}>`);
  }
  flush();
  return page(`trainwatch: ${title}`, `<p><a href="./">trainwatch docs</a> · <a href="${esc(name)}.md">markdown</a></p>\n${parts.join('\n')}`);
}

/** The list of served documents, for /docs/. */
export function docsIndexHtml(docs: DocSet): string {
  const items = [...docs.keys()].map((n) => `<li><a href="${esc(n)}">${esc(n)}</a></li>`).join('\n');
  return page('trainwatch docs', `<h1>trainwatch docs</h1>\n<p><a href="../">status page</a></p>\n<ul>\n${items}\n</ul>`);
}

const page = (title: string, body: string) =>
  `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${esc(title)}</title></head>\n<body>\n${body}\n</body></html>\n`;
