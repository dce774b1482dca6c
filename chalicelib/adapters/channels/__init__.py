"""Payment channels behind the PaymentGateway port: Alipay, WeChat Pay, the local simulator."""
