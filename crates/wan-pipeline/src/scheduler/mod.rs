//! Samplers: UniPC multistep and flow-match Euler, configured from scheduler_config.json.
