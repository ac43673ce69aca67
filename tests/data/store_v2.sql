-- A store written by historymw before short ids (schema version 2), as sqlite3 .dump prints it.
BEGIN TRANSACTION;
CREATE TABLE historymw_calls (
	id VARCHAR(64) NOT NULL, 
	started_at FLOAT NOT NULL, 
	ended_at FLOAT NOT NULL, 
	duration_s FLOAT NOT NULL, 
	provider VARCHAR, 
	model VARCHAR, 
	operation VARCHAR, 
	session VARCHAR, 
	status VARCHAR(8) NOT NULL, 
	error_type VARCHAR, 
	error_message TEXT, 
	output_text TEXT, 
	finish_reason VARCHAR, 
	input_tokens INTEGER, 
	output_tokens INTEGER, 
	total_tokens INTEGER, 
	cost FLOAT, 
	stream BOOLEAN, 
	time_to_first_token_s FLOAT, 
	trace_id VARCHAR(32), 
	span_id VARCHAR(16), 
	trace_flags INTEGER, 
	source VARCHAR, 
	size_bytes INTEGER, 
	response_id VARCHAR, 
	response_model VARCHAR, 
	cache_hit BOOLEAN, 
	server_address VARCHAR, 
	messages JSON, 
	params JSON, 
	outputs JSON, 
	tags JSON, 
	metadata JSON, 
	extra JSON, 
	PRIMARY KEY (id)
);
INSERT INTO "historymw_calls" VALUES('01a22703d9ca33c80b4bda4500000000',1.79595089351430940629e+09,1.79595089351431274411e+09,3.29700014845002442598e-06,'q','m2','chat',NULL,'ok',NULL,NULL,'direct',NULL,NULL,NULL,NULL,NULL,0,NULL,NULL,NULL,NULL,'decorator',679,NULL,NULL,NULL,NULL,'[{"role":"user","content":"hi"}]',NULL,NULL,NULL,NULL,NULL);
INSERT INTO "historymw_calls" VALUES('019e7044880033c80b4bda4500000001',1780000000.0,1780000000.25,0.25,'p','a','chat',NULL,'ok',NULL,NULL,'answer 0',NULL,10,2,12,0.002,0,NULL,NULL,NULL,NULL,'manual',761,NULL,NULL,NULL,NULL,'[{"role":"user","content":"question 0"}]',NULL,NULL,NULL,NULL,NULL);
INSERT INTO "historymw_calls" VALUES('019e7044880033c80b4bda4500000002',1.78000000000000095363e+09,1780000000.5,4.9999904632568359375e-01,'p','a','chat',NULL,'ok',NULL,NULL,'answer 1',NULL,10,2,12,0.002,0,NULL,NULL,NULL,NULL,'manual',761,NULL,NULL,NULL,NULL,'[{"role":"user","content":"question 1"}]',NULL,NULL,NULL,NULL,NULL);
INSERT INTO "historymw_calls" VALUES('019e7044880033c80b4bda4500000003',1.7800000000000019073e+09,1780000000.75,7.499980926513671875e-01,'p','a','chat',NULL,'ok',NULL,NULL,'answer 2',NULL,10,2,12,0.002,0,NULL,NULL,NULL,NULL,'manual',761,NULL,NULL,NULL,NULL,'[{"role":"user","content":"question 2"}]',NULL,NULL,NULL,NULL,NULL);
INSERT INTO "historymw_calls" VALUES('019e7044880033c80b4bda4500000004',1.78000000000000309949e+09,1780000001.0,9.99996900558471679687e-01,'p','a','chat',NULL,'error','ValueError','bad input','answer 3',NULL,10,2,12,0.002,0,NULL,NULL,NULL,NULL,'manual',761,NULL,NULL,NULL,NULL,'[{"role":"user","content":"question 3"}]',NULL,NULL,NULL,NULL,NULL);
INSERT INTO "historymw_calls" VALUES('019e7044880033c80b4bda4500000005',1.78000000000000405315e+09,1780000001.25,1.24999594688415527343e+00,'p','b','chat','s1','ok',NULL,NULL,'answer 4',NULL,10,2,12,0.002,0,NULL,NULL,NULL,NULL,'manual',761,NULL,NULL,NULL,NULL,'[{"role":"user","content":"question 4"}]',NULL,NULL,NULL,NULL,NULL);
INSERT INTO "historymw_calls" VALUES('019e7044880033c80b4bda4500000006',1.78000000000000500681e+09,1780000001.5,1.49999499320983886718e+00,'p','b','chat','s1','ok',NULL,NULL,'answer 5',NULL,10,2,12,0.002,0,NULL,NULL,NULL,NULL,'manual',761,NULL,NULL,NULL,NULL,'[{"role":"user","content":"question 5"}]',NULL,NULL,NULL,NULL,NULL);
CREATE TABLE historymw_schema (
	name VARCHAR(32) NOT NULL, 
	version INTEGER NOT NULL, 
	PRIMARY KEY (name)
);
INSERT INTO "historymw_schema" VALUES('calls',2);
CREATE INDEX ix_historymw_calls_trace_id ON historymw_calls (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX ix_historymw_calls_errors ON historymw_calls (status, started_at) WHERE status = 'error';
CREATE INDEX ix_historymw_calls_started_at ON historymw_calls (started_at);
CREATE INDEX ix_historymw_calls_session ON historymw_calls (session) WHERE session IS NOT NULL;
CREATE INDEX ix_historymw_calls_model ON historymw_calls (model);
COMMIT;
