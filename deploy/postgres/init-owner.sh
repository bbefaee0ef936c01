#!/bin/sh
# Runs once, when the postgres container initialises its data directory: the schema's owner is a
# login of its own, not the superuser, with the right to create sql/roles.sql's group roles.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" -v pw="$SMS_RELAY_OWNER_PASSWORD" <<'SQL'
CREATE ROLE sms_owner LOGIN CREATEROLE PASSWORD :'pw';
CREATE DATABASE sms_relay OWNER sms_owner;
SQL
