// Mailbox-name globs for --only / --exclude: `*` matches any run of
// characters (including the hierarchy separator), `?` one character; all
// else is literal. Mailbox names have no path semantics here, so no `**`.

export function globToRegExp(glob: string): RegExp {
  let re = "^";
  for (const ch of glob) {
    if (ch === "*") re += ".*";
    else if (ch === "?") re += ".";
    else re += ch.replace(/[\\^$.|+()[\]{}]/g, "\\$&");
  }
  return new RegExp(`${re}$`, "s");
}

export function nameFilter(
  only: readonly string[],
  exclude: readonly string[],
): (name: string) => boolean {
  const inc = only.map(globToRegExp);
  const exc = exclude.map(globToRegExp);
  return (name) =>
    (inc.length === 0 || inc.some((r) => r.test(name))) && !exc.some((r) => r.test(name));
}
