//! The job manager between the HTTP front end and the pipeline (to be written).
