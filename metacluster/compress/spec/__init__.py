"""The spec of a run: `MetaClusterConfig` (config), the effort presets and run budget
(effort) and the progress / stop callbacks (hooks). Imports nothing else of compress/."""
