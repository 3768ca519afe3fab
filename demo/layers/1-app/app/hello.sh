#!/bin/sh
echo "hello from a confidential container"
