// Moved to src/fsutil/fcntl-lock.ts (the engine takes these locks too, and it
// must not import the agent). Kept so that imports of the old path still work.
export * from "../fsutil/fcntl-lock.js";
