// The layout's import rules (npm run lint). Each says which way knowledge
// flows; shared/docs/design.md has the layers. A rule broken here means a
// module reaches into a layer it must not know: move the shared piece down
// (src/fsutil/, src/errors.ts) instead of adding an exception.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "cyrus-knows-only-cyrus",
      comment: "src/cyrus is the on-disk format: it knows no transport, plan, engine, agent or CLI.",
      severity: "error",
      from: { path: "^src/cyrus/" },
      to: { path: "^src/(transport|plan|apply|agent|cli)/" },
    },
    {
      name: "agent-knows-no-plan-or-engine",
      comment: "The agent serves requests; it knows nothing of plans, the engine or the CLI.",
      severity: "error",
      from: { path: "^src/agent/" },
      to: { path: "^src/(plan|apply|cli)/" },
    },
    {
      name: "protocol-depends-on-neither-end",
      comment: "src/protocol is shared by the agent and the controller: it knows neither.",
      severity: "error",
      from: { path: "^src/protocol/" },
      to: { path: "^src/(agent|apply|transport|plan|cli)/" },
    },
    {
      name: "plan-is-data",
      comment:
        "A plan is data: plan/ does not reach hosts (transport), the engine or the agent. " +
        "The host descriptions it records live in src/host-spec.ts, which every layer may know.",
      severity: "error",
      from: { path: "^src/plan/" },
      to: { path: "^src/(transport|apply|agent)/" },
    },
    {
      name: "engine-reaches-hosts-through-transport",
      comment: "apply/ (the engine) talks to agents only through transport/, never by importing the agent.",
      severity: "error",
      from: { path: "^src/apply/" },
      to: { path: "^src/agent/" },
    },
    {
      name: "src-is-self-contained",
      comment: "What ships (src/) never imports the examples, tests or benchmarks.",
      severity: "error",
      from: { path: "^src/" },
      to: { path: "^(examples|test|bench)/" },
    },
    {
      name: "fsutil-is-a-leaf",
      comment: "src/fsutil (atomic files, locks) is used by every layer, so it knows none of them.",
      severity: "error",
      from: { path: "^src/fsutil/" },
      to: { path: "^src/", pathNot: "^src/(fsutil/|errors\\.ts$)" },
    },
    {
      name: "shared-modules-are-leaves",
      comment:
        "src/errors.ts, src/host-spec.ts and src/version.ts are known by every layer, so they know none of them.",
      severity: "error",
      from: { path: "^src/(errors|host-spec|version)\\.ts$" },
      to: { path: "^src/", pathNot: "^src/errors\\.ts$" },
    },
    {
      name: "not-to-unresolvable",
      comment: "An import that resolves to nothing is a typo or a moved file.",
      severity: "error",
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "^(dist|node_modules)/" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
  },
};
