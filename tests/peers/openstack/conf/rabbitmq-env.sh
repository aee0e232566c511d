# RabbitMQ on loopback only, all state under @STATE@/rabbit (sourced by peer.sh).
export RABBITMQ_NODENAME=rabbit@localhost
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=5672
export ERL_EPMD_ADDRESS=127.0.0.1
export ERL_EPMD_PORT=4369
export RABBITMQ_DIST_PORT=25672
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export RABBITMQ_MNESIA_BASE=@STATE@/rabbit/mnesia
export RABBITMQ_LOG_BASE=@STATE@/rabbit/log
export RABBITMQ_CONFIG_FILES=@STATE@/rabbit/conf.d
export RABBITMQ_ENABLED_PLUGINS_FILE=@STATE@/rabbit/enabled_plugins
export RABBITMQ_PID_FILE=@STATE@/run/rabbitmq.pid
export HOME=@STATE@/rabbit
